"""Experiment folders written by hand as a real run leaves them: the one writer for tests that read folders.

A trial folder (see glimr_cv/engine/trainable.py) holds ``params.json`` (the
configuration with glimr_cv's bookkeeping key), ``result.json`` (one JSON line per
report, with Ray Tune's bookkeeping fields), ``error.txt`` when its worker died, and
``checkpoint_000000/`` when its fold finished.
"""

import json

from glimr_cv.schema import META


def write_trial(exp, name, params, config_id, fold, lines=(), *, raw_tail=None, error_txt=None, checkpoint=None,
                result=True):
    """Write trial folder ``exp/name`` and return its path.

    ``lines``: result.json's reports, complete dicts; ``raw_tail``: text appended
    after them (a line cut short by a kill); ``checkpoint``: file name -> text or
    bytes inside ``checkpoint_000000`` (None: no checkpoint); ``result=False``: a
    trial that started and never reported (no result.json).
    """
    d = exp / name
    d.mkdir()
    (d / "params.json").write_text(json.dumps({**params, META: {"config_id": config_id, "fold": fold}}))
    if result:
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (d / "result.json").write_text(text + (raw_tail or ""))
    if error_txt is not None:
        (d / "error.txt").write_text(error_txt)
    if checkpoint is not None:
        ckpt = d / "checkpoint_000000"
        ckpt.mkdir()
        for file, content in checkpoint.items():
            (ckpt / file).write_bytes(content) if isinstance(content, bytes) else (ckpt / file).write_text(content)
    return d
