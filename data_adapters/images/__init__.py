"""Images: reading micrographs, the ``image_folder`` adapter, patches, labels and rotation views."""
