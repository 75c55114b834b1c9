"""The site's side of the protocol: the Flower ClientApp, its message handlers, the per-site
worker process and the site operator's screen."""
