"""Only here to make the wheel a platform wheel tagged py3-none-<platform>: the package
is pure Python (ctypes), but it carries libtabagent and its llama.cpp/ggml libraries in
tabagent/_lib. Everything else is in pyproject.toml."""

from setuptools import setup
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]


class BinaryDistribution(Distribution):
    """Platform-specific content: the wheel's root is platlib, its tag names the platform."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):  # type: ignore[misc,valid-type]
    def get_tag(self):  # type: ignore[no-untyped-def]
        _python, _abi, plat = super().get_tag()
        return "py3", "none", plat  # any Python 3: the libraries do not link libpython


setup(distclass=BinaryDistribution, cmdclass={"bdist_wheel": PlatformWheel})
