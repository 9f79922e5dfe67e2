"""The results JSON of a training run, built in one place from named parts: two parts
that write the same key are an error, never a silent overwrite."""


class KeyCollision(ValueError):
    """Two parts of a results record write the same key (a bug, not a user error)."""


def record(*parts):
    """One dict from ``(source, fields)`` pairs, keys in the order given.

    Raises ``KeyCollision`` naming both sources when a key comes twice.
    """
    merged, owner = {}, {}
    for source, fields in parts:
        for key, value in fields.items():
            if key in merged:
                raise KeyCollision(f"the results key {key!r} is written by both "
                                   f"{owner[key]} and {source}")
            merged[key], owner[key] = value, source
    return merged
