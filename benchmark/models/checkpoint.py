"""Safe checkpoint loading and saving: sha256 pins, safetensors / weights-only pickles, strict fits.

Nothing here ever executes code from a checkpoint: safetensors files hold raw tensors only, and
PyTorch pickles are read with ``torch.load(weights_only=True)``, whose unpickler refuses any
global (function or class) that is not a plain tensor building block. A file is read once: the
bytes that are hashed (against a sha256 pin) are the bytes that are deserialized, so a file replaced
on disk between the check and the load can never slip in.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from benchmark.atomic import atomic_write_bytes
from benchmark.errors import CheckpointError

logger = logging.getLogger(__name__)

#: Suffixes read with ``torch.load(weights_only=True)``.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
#: Keys under which training scripts commonly nest the weights, tried in this order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_MAX_LISTED = 10


class Sha256MismatchError(CheckpointError):
    """The bytes of a checkpoint do not have the sha256 they were expected (pinned or planned) to have.

    Attributes:
        path: the file.
        expected: the expected hex digest.
        actual: the digest of the bytes read.
    """

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(f"{path}: sha256 mismatch, refusing to load it: expected {expected}, actual {actual}")


def sha256_bytes(data: bytes) -> str:
    """sha256 hex digest of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def read_checkpoint_bytes(path: Path) -> bytes:
    """The whole content of a checkpoint file, read once.

    Raises:
        CheckpointError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e}") from e


def check_sha256(data: bytes, expected: str, path: Path) -> str:
    """The sha256 of ``data``, after checking it equals ``expected`` (case and ``sha256:`` prefix ignored).

    Raises:
        Sha256MismatchError: another digest.
    """
    want = expected.strip().lower().removeprefix("sha256:")
    actual = sha256_bytes(data)
    if actual != want:
        raise Sha256MismatchError(path, want, actual)
    return actual


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint, or explain why there is none."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(obj).__name__}")
    if not _is_tensor_dict(obj):
        for key in CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                logger.debug("%s: using the weights under the key '%s'", path, key)
                obj = inner
                break
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad or not obj:
        what = f"non-tensor values under {_listing(bad)}" if bad else "no tensors"
        raise CheckpointError(
            f"{path}: not a state dict ({what}); expected a dict of tensors, possibly nested under "
            f"one of the keys {', '.join(CONTAINER_KEYS)}. Top-level keys: {_listing([str(k) for k in obj])}"
        )
    return {str(k): v for k, v in obj.items()}


def _load_pickle(data: bytes, path: Path) -> object:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # The weights-only unpickler names a disallowed GLOBAL when the file references code;
        # anything else it rejects is a malformed byte stream.
        if "global" in msg.lower() or "unsupported class" in msg.lower():
            raise CheckpointError(
                f"{path} is not a plain weights file: loading it would import or run code "
                f"({_first_reason(msg)}). It was refused. Convert it to safetensors on a machine where "
                f"you trust the file, e.g. `benchmark.models.checkpoint.save_safetensors("
                f"torch.load(path, weights_only=False)['state_dict'], 'model.safetensors', {{}})`."
            ) from e
        raise CheckpointError(f"{path} is corrupt or not a PyTorch checkpoint: {_first_reason(msg)}") from e
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, IndexError) as e:
        raise CheckpointError(
            f"{path} is corrupt, truncated or not a PyTorch checkpoint: {type(e).__name__}: {_first_reason(str(e))}"
        ) from e


def _first_reason(msg: str) -> str:
    """The informative line of torch's long error messages (the one naming the global or operand)."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "weights only" not in low and any(w in low for w in ("global", "unsupported", "invalid", "failed")):
            return ln
    return lines[0] if lines else "no details"


def _load_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated (safetensors): {e}") from e


def state_dict_from_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Deserialize the bytes of a checkpoint; ``path`` gives the format (its suffix) and names the file.

    Raises:
        CheckpointError: unsafe (would run code), corrupt, unsupported suffix, or not a dict of tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        obj: object = _load_safetensors(data, path)
    elif suffix in PICKLE_SUFFIXES:
        obj = _load_pickle(data, path)
    else:
        raise CheckpointError(
            f"{path}: unsupported checkpoint suffix '{path.suffix}'; use {SAFETENSORS_SUFFIX} "
            f"(preferred) or one of {', '.join(PICKLE_SUFFIXES)}"
        )
    state = _unwrap(obj, path)
    logger.debug("read %d tensors from %s", len(state), path)
    return state


def load_state_dict(path: Path, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or weights-only PyTorch file.

    The file is read once; the pin is checked on those bytes and the same bytes are deserialized.

    Args:
        path: checkpoint file (``.safetensors``, ``.pt``, ``.pth``, ``.bin`` or ``.ckpt``).
        sha256: expected sha256 hex digest; checked before anything is deserialized.

    Returns:
        The tensors on CPU, unwrapped from ``state_dict``/``model_state_dict``/``model``/``net``.

    Raises:
        CheckpointError: missing, unsafe (would run code), corrupt, unsupported suffix, or not a dict
            of tensors; :class:`Sha256MismatchError` when pinned to another hash.
    """
    path = Path(path)
    data = read_checkpoint_bytes(path)
    if sha256 is not None:
        check_sha256(data, sha256, path)
    return state_dict_from_bytes(data, path)


def apply_key_map(
    state_dict: Mapping[str, torch.Tensor],
    strip_prefixes: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Rewrite state-dict keys: strip prefixes, then rename.

    Args:
        state_dict: the tensors.
        strip_prefixes: prefixes removed, in order, from the keys that start with them (e.g.
            ``["module.", "model."]``: ``module.model.fc.weight`` becomes ``fc.weight``).
        rename: ``old -> new`` applied to a key equal to ``old`` or starting with ``old + "."``
            (module-path semantics: ``{"fc": "linear"}`` maps ``fc.weight`` to ``linear.weight`` but
            leaves ``fc2.weight`` alone).

    Raises:
        CheckpointError: two keys end up with the same name.
    """
    rename = dict(rename or {})
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        new = key
        for prefix in strip_prefixes:
            if prefix and new.startswith(prefix):
                new = new[len(prefix):]
        # Longest match first so that {"a": .., "a.b": ..} renames a.b.* by the more specific rule.
        for old in sorted(rename, key=len, reverse=True):
            if new == old or new.startswith(old + "."):
                new = rename[old] + new[len(old):]
                break
        if new in out:
            raise CheckpointError(f"key map sends both '{origin[new]}' and '{key}' to '{new}'")
        out[new] = value
        origin[new] = key
    return out


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly; every parameter and buffer must be covered.

    Args:
        model: the freshly built model.
        state_dict: tensors keyed like ``model.state_dict()``.
        source: where the tensors came from (file name), for error messages.

    Returns:
        ``model``, with its weights replaced.

    Raises:
        CheckpointError: missing keys, unexpected keys or shape mismatches (up to 10 of each listed).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if problems:
        hint = ""
        if unexpected and missing and any(k.startswith(("module.", "model.")) for k in unexpected):
            hint = " (the checkpoint keys carry a prefix: strip it, e.g. strip_prefixes: ['module.'])"
        raise CheckpointError(
            f"{source} does not fit the model {type(model).__name__}: " + "; ".join(problems) + hint
        )
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as e:  # dtype/other incompatibilities the checks above do not cover
        raise CheckpointError(f"{source} does not fit the model {type(model).__name__}: {e}") from e
    return model


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """Write ``state_dict`` to ``path`` as safetensors, atomically (temp file, fsync, ``os.replace``).

    Args:
        state_dict: tensors to save (moved to CPU; tensors sharing memory are copied apart).
        path: destination file; its folder is created.
        metadata: string key/value pairs stored in the file header (provenance, recipe, ...).

    Raises:
        CheckpointError: metadata that is not ``str -> str``.
    """
    from safetensors.torch import save

    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise CheckpointError(
            f"safetensors metadata must map str to str; bad entries: {_listing([str(b) for b in bad])}"
        )
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state_dict.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses aliased tensors (tied weights); give each its own storage.
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[k] = t
    payload = save(tensors, metadata=dict(metadata))
    atomic_write_bytes(Path(path), lambda f: f.write(payload))
    logger.debug("saved %d tensors to %s", len(tensors), path)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata in a safetensors header (empty if none), without reading the tensors.

    Raises:
        CheckpointError: missing or corrupt file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated (safetensors): {e}") from e


def safetensors_metadata_from_bytes(data: bytes, path: Path) -> dict[str, str]:
    """The string metadata in the header of safetensors bytes, after checking the header is whole.

    Checks the header length, that the header is a JSON object and that the tensor data ends exactly
    at the end of ``data`` (a truncated or padded file fails); the tensors themselves are not read.

    Raises:
        CheckpointError: a damaged header, or a size that does not match it.
    """
    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or n > len(data) - 8:
            raise ValueError(f"header of {n} bytes announced, {len(data)} bytes in the file")
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        if 8 + n + end != len(data):
            raise ValueError(f"tensor data ends at byte {8 + n + end}, the file has {len(data)}")
    except (ValueError, KeyError, TypeError, IndexError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is corrupt or truncated (safetensors header): {e}") from e
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path} is corrupt (safetensors header): metadata is not a map of strings")
    return dict(meta)


def weights_hash(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, dtypes, shapes and raw bytes of every tensor (parameters and buffers).

    Stable across runs and machines for the same weights; any changed value changes it.
    """
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        # A uint8 view covers every dtype, bfloat16 included (numpy has none).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
