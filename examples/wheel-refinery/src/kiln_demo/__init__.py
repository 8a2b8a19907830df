"""kiln demo package: the source of the wheel built by examples/wheel-refinery."""
__version__ = "1.0.0"


def hello() -> str:
    return "hello from a wheel built on s390x"
