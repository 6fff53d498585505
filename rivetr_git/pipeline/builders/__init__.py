"""The build types: detection from the pushed tree, and one module per way of building an image
(static sites, the buildpack CLIs, compose groups with their file checked first)."""
