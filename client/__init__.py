"""Everything that touches patient data: readers, preprocessing, the local trainer, the ClientApp."""
