"""Audio and images from two clocks: manifests, synchronisation, the adapter and the pairs.

Field stations record sound with one device and images with another. A sound and an image
captured at the same moment are a positive pair; the timestamps are the only supervision,
and the devices' clocks disagree by an unknown offset plus jitter.
"""
