# Kept equal to Cargo.toml's version by bindings/python/build-wheel.sh (it fails otherwise).
__version__ = "0.1.0"
