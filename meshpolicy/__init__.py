"""meshpolicy: policy-as-code for service meshes."""

__version__ = "0.1.0"
