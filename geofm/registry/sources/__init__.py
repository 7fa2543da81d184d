"""Adapters that expose external model zoos (timm, smp, mmseg) as registry sources.

Each adapter imports its library on first use, never at ``import geofm``.
"""
