"""What a run leaves at the site: risk scores, Grad-CAM overlays and slide attention maps."""
