"""`@dataclass` and `field` for the target's plain data classes, without the dataclasses module.

The one-shot commands pay for every import (OpenStack Cinder's LIO driver
runs one process per step, bench/bench_target_cinder.py): in the lab guest
`import dataclasses` (which imports inspect, ast, dis, tokenize) took ~0.18 s
and decorating model.py's twelve classes another ~0.18 s, because each one
compiles generated __init__/__repr__/__eq__ code.  model.py and plan.py only
need what is here: fields in annotation order, defaults, `default_factory`,
`compare=False`, keyword or positional construction, equality over the
compared fields, and a readable repr.  The methods are shared functions (and
one closure per class) over a field table, so decorating a class compiles nothing.

(cli/adm/context.py made the same choice for the initiator's parser.)
"""

from __future__ import annotations

_MISSING = object()


class Field:
    __slots__ = ("default", "default_factory", "compare")

    def __init__(self, default=_MISSING, default_factory=_MISSING, compare=True):
        self.default, self.default_factory, self.compare = default, default_factory, compare


def field(*, default=_MISSING, default_factory=_MISSING, compare: bool = True) -> Field:
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot give both default and default_factory")
    return Field(default, default_factory, compare)


def _make_init(cls_name: str, names: tuple, defaults: dict, factories: tuple):
    """An __init__ closed over the class's field table: no code is compiled, and a
    snapshot of 1000 targets makes ~10,000 objects, so it does as little as it can."""
    n, nameset = len(names), frozenset(names)

    def __init__(self, *args, **kw):
        if len(args) > n:
            raise TypeError(f"{cls_name}() takes {n} positional arguments, got {len(args)}")
        d = self.__dict__
        d.update(defaults)
        if args:
            d.update(zip(names, args))
        if kw:
            if not nameset.issuperset(kw):
                raise TypeError(f"{cls_name}() got an unexpected keyword argument {sorted(set(kw) - nameset)[0]!r}")
            if args:
                twice = [x for x in names[:len(args)] if x in kw]
                if twice:
                    raise TypeError(f"{cls_name}() got multiple values for argument {twice[0]!r}")
            d.update(kw)
        # a factory runs only for a field not given (NodeACL(chap=...) makes one Chap, not two)
        for name, make in factories:
            if name not in d:
                d[name] = make()
        if len(d) < n:
            raise TypeError(f"{cls_name}() missing required argument {[x for x in names if x not in d][0]!r}")
    return __init__


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    a, b = self.__dict__, other.__dict__
    return all(a[n] == b[n] for n in self._rec_compared)


def _repr(self):
    d = self.__dict__
    return f"{type(self).__name__}({', '.join(f'{n}={d[n]!r}' for n in self._rec_names)})"


def dataclass(cls):
    """The subset of dataclasses.dataclass described above (eq=True, so unhashable, as there)."""
    names, defaults, factories, compared, seen_default = [], {}, [], [], False
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        required = f.default is _MISSING and f.default_factory is _MISSING
        if required and seen_default:
            raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default one")
        seen_default = seen_default or not required
        names.append(name)
        if f.compare:
            compared.append(name)
        if f.default_factory is not _MISSING:
            factories.append((name, f.default_factory))
            delattr(cls, name)
        elif f.default is not _MISSING:
            defaults[name] = f.default
            setattr(cls, name, f.default)
    cls._rec_names, cls._rec_compared = tuple(names), tuple(compared)
    init = _make_init(cls.__name__, tuple(names), defaults, tuple(factories))
    for attr, fn in (("__init__", init), ("__eq__", _eq), ("__repr__", _repr)):
        if attr not in cls.__dict__:
            setattr(cls, attr, fn)
    cls.__hash__ = None
    return cls
