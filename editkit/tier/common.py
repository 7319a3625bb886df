"""Pieces both tiers share: the one fast-path check, target positions, the empty-request check."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping

import torch

from editkit.batching import PromptBatch
from editkit.errors import EditkitError
from editkit.partial import mismatch
from editkit.requests import EditRequest

#: the loop an edit ran when no shortcut is used (recorded as ``loop`` in the edit's stats)
FULL = "full"
#: the shortcut loops (recorded as ``loop``): the rows laid end to end without padding, or the padded batch
PACKED, PADDED = "packed", "padded"
#: the shortcuts of an edit's training loop, fastest first: the first edit keeps the first that matches the
#: full forward (see :class:`FastPath`)
FAST_MODES = (PACKED, PADDED)


class FastPath:
    """Which shortcut of an edit's training loop reproduces the model's own full forward on this model.

    Shortcuts (cached lower layers, only the blocks above the edit, the LM head only at the targets) are
    exact on most decoders and wrong on some (position embeddings added to ``inputs_embeds``, rescaled
    embeddings...), so the first edit compares each candidate with the full forward, once, with one
    tolerance (:func:`editkit.partial.mismatch`), and every later edit trusts the answer.

    A fallback to the full forward is never silent: it is announced once per editor (so once per run of a
    method), in one line on stderr with the reason, naming the ``owner`` editor; every
    edit then records ``loop: full``, which the run's summary counts.
    """

    def __init__(self, reason: str | None, owner: object = None):
        #: None: not checked yet; else the chosen candidate's name or :data:`FULL`
        self.mode: str | None = None if reason is None else FULL
        #: why the full forward is used (None while a shortcut is, or may still be, used)
        self.reason = reason
        self.owner = owner
        self._announced = False

    @property
    def checked(self) -> bool:
        return self.mode is not None

    @property
    def usable(self) -> bool:
        """False once the full forward is known to be needed (a caller may then skip the lower pass)."""
        if self.mode == FULL:
            self.announce()
        return self.mode != FULL

    def fall_back(self, reason: str) -> None:
        """Use the full forward from now on, announcing why."""
        self.mode, self.reason = FULL, reason
        self.announce()

    def announce(self) -> None:
        """The one line (once) that says the fast loop is off here, and why."""
        if not self._announced and self.mode == FULL:
            self._announced = True
            print(f"{label(self.owner) if self.owner is not None else 'editor'}: the fast edit loop is off, every edit runs the full forward ({self.reason or 'no reason recorded'})", file=sys.stderr)

    def choose(
        self,
        full: Callable[[], torch.Tensor],
        candidates: Mapping[str, Callable[[], torch.Tensor]],
        probe: ContextManager[object] | None = None,
    ) -> str:
        """The first candidate whose logits match ``full``'s (checked on the first call only), else
        :data:`FULL`. ``probe``: a context that puts a non-zero edit in place for the check, so the point
        where the edit joins the residual stream is tested too, not only the cached lower layers."""
        if self.mode is None:
            reasons: list[str] = []
            with torch.no_grad(), probe if probe is not None else nullcontext():
                reference = full()
                for name, short in candidates.items():
                    try:
                        why = mismatch(short(), reference)
                    except Exception as error:  # a decoder that cannot be driven from inputs_embeds this way
                        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    if why is None:
                        self.mode = name
                        break
                    reasons.append(f"{name}: {why}")
            if self.mode is None:
                self.fall_back("; ".join(reasons) or "no shortcut to try")
        elif self.mode == FULL:
            self.announce()
        return self.mode


def target_positions(batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns, tokens) of every position whose logits must predict a target token."""
    labels = batch.target_labels()
    rows, cols = torch.nonzero(labels != -100, as_tuple=True)
    return rows, cols, labels[rows, cols]


def require_tokens(request: EditRequest, prompt_tokens: int, target_tokens: int) -> None:
    """An edit needs a prompt and a target with at least one token each. The CLI's stream check
    (``streams.check_fits_model``) refuses such records before a run; this is the same promise for callers
    of :meth:`~editkit.editor.Editor.edit` (without it the loss would be nan over zero targets)."""
    if not prompt_tokens or not target_tokens:
        raise EditkitError(f"edit request {request.id}: the {'prompt' if not prompt_tokens else 'target'} has no tokens")


def label(editor: object) -> str:
    """How messages name an editor: its registered name in capitals (``MEMOIR``, ``FT-L``)."""
    return (getattr(editor, "name", "") or type(editor).__name__).upper()


def check_state_module(editor: object, metadata: Mapping[str, object], verb: str = "wraps") -> None:
    """A saved state belongs to the module it was made at (``metadata["module"]``, as both tiers save it)."""
    here = getattr(editor, "module_path")
    module = metadata.get("module", here)
    if module != here:
        raise EditkitError(f"{label(editor)} state {verb} '{module}', but this editor {verb} '{here}'")
