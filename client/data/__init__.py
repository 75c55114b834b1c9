"""A site's data: its clinical table and inventory, validation, preprocessing through the
cache, and the torch Dataset of prepared patients."""
