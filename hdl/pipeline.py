"""Small helpers shared by the pipelined stream units: argument checks and per-stage carries."""

from amaranth.hdl import Shape, Signal

from .config import AttentionConfig

__all__ = ["check_unit_args", "has_tag", "carry"]


def check_unit_args(cfg, tag_shape):
    """The constructor checks of a unit taking a config and a tag shape (``TypeError``)."""
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    try:
        Shape.cast(tag_shape)
    except TypeError:
        raise TypeError(f"tag_shape must be a shape-castable object, not {tag_shape!r}") from None


def has_tag(tag_shape):
    """Whether a tag of this shape has bits (a layout leaves the field out otherwise)."""
    return Shape.cast(tag_shape).width > 0


def carry(m, value, out, stages, suffix, enable):
    """Carry ``value`` through one register per stage while ``enable``: ``<stage>_<suffix>`` for
    every stage but the last, whose register is ``out``."""
    for stage in stages[:-1]:
        reg = Signal.like(value, name=f"{stage}_{suffix}")
        with m.If(enable):
            m.d.sync += reg.eq(value)
        value = reg
    with m.If(enable):
        m.d.sync += out.eq(value)
