"""Small Tk applications the demo drives on its virtual display (run as ``python -m``)."""
