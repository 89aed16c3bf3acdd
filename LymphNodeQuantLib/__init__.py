"""LymphNodeQuantLib: the LymphNodeQuant engine (no Slicer import).

Find, outline and measure mediastinal lymph nodes on chest CT. Arrays are indexed (z, y, x) and
always travel with an :class:`~LymphNodeQuantLib.geometry.ImageGeometry` (LPS millimetres).
"""

__version__ = "0.1.0"
