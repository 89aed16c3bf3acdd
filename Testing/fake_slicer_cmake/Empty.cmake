# Nothing to do outside Slicer.
