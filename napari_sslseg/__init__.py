"""napari-sslseg: semi-supervised segmentation of 3D medical volumes.

The compute core (data, networks, methods, training loop, inference, I/O) imports
no Qt, napari or magicgui; the napari widgets live in :mod:`napari_sslseg._qt`.
"""

__version__ = "0.1.0"
