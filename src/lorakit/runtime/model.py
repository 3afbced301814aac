"""The multi-adapter runtime: many LoRA adapters loaded onto one transformers model.

:class:`MultiAdapterModel` replaces the targeted layers of a model in place with
:class:`~lorakit.runtime.layers.LoraLayer` wrappers and freezes the base model's parameters, as PEFT does. Loading, activating
and routing never change the base weights, the model's train/eval mode or any
adapter's ``requires_grad`` flag. Only :meth:`MultiAdapterModel.merge` changes
weights, and :meth:`MultiAdapterModel.unmerge` restores them bit for bit.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.adapters.io import read_adapter
from lorakit.adapters.model import Adapter, is_embedding_base_copy
from lorakit.adapters.validate import layer_shape, validate_adapter
from lorakit.errors import AdapterMismatchError, AdapterNotFoundError, LorakitError, MergeError, RoutingError
from lorakit.runtime.layers import LoraLayer, ModuleCopiesLayer
from lorakit.runtime.routing import RoutingPlan, RowSpec, RuntimeState, Stack, make_stack

logger = logging.getLogger(__name__)

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass
class AdapterRecord:
    """Metadata of one loaded adapter: its config, where it came from, and which modules it touches."""

    name: str
    config: dict[str, Any]
    module_paths: list[str]
    copy_paths: list[str]
    source: str | None = None
    trainable: bool = False
    fan_in_fan_out: dict[str, bool] = field(default_factory=dict)


class MultiAdapterModel:
    """Many LoRA adapters on one base model: load, activate, stack, route, merge.

    The wrapped model is changed in place (its target layers are replaced by
    wrappers) and stays usable directly: ``runtime.model(**inputs)`` applies the
    active stack.

    Args:
        model: A transformers model (or any ``nn.Module``) without PEFT layers.
        adapter_dtype: The dtype adapter factors are kept and applied in. By default
            float32 for a float16 or bfloat16 model (as PEFT does), else the model's dtype.

    Raises:
        LorakitError: ``model`` is a PEFT model, has PEFT layers, or already has a runtime.
    """

    def __init__(self, model: nn.Module, *, adapter_dtype: torch.dtype | None = None) -> None:
        _check_plain_model(model)
        self.model = model
        self.state = RuntimeState()
        self._records: dict[str, AdapterRecord] = {}
        self._lora_layers: dict[str, LoraLayer] = {}
        self._copy_layers: dict[str, ModuleCopiesLayer] = {}
        self._originals: dict[tuple[str, str], torch.Tensor] = {}  # (module path, parameter) -> unmerged data
        model_dtype = _model_dtype(model)
        half = model_dtype in (torch.float16, torch.bfloat16)
        self.adapter_dtype = adapter_dtype or (torch.float32 if half else model_dtype)
        model.lorakit_runtime = _RuntimeRef(self)
        self._freeze_base(log_level=logging.DEBUG)  # as PEFT does; worth a line only when an adapter trains

    # Listing -----------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return list(self._records)

    @property
    def active(self) -> dict[str, float]:
        """The active stack as ``{name: weight}`` (empty for the base model)."""
        return dict(self.state.active)

    @property
    def merged(self) -> dict[str, float] | None:
        """The stack folded into the base weights, or ``None``."""
        return None if self.state.merged is None else dict(self.state.merged)

    def record(self, name: str) -> AdapterRecord:
        """Return the metadata of adapter ``name``."""
        self._require(name)
        return self._records[name]

    def _require(self, name: str) -> None:
        if name not in self._records:
            raise AdapterNotFoundError(
                f"Adapter {name!r} is not loaded; loaded adapters: {', '.join(self._records) or 'none'}."
            )

    # Loading -----------------------------------------------------------------------

    def load_adapter(
        self, source: str | Path | Adapter, name: str | None = None, *, trust_pickle: bool = False
    ) -> str:
        """Load a PEFT adapter folder (or an :class:`Adapter`) under ``name``, frozen and inactive.

        The adapter is checked against the model first; on any error the model is
        left exactly as it was. To load several adapters, :meth:`load_adapters` is faster.

        Args:
            source: An adapter folder, a hub id, or an :class:`Adapter`.
            name: The name to load it under; the folder or adapter name by default.
            trust_pickle: Allow an ``adapter_model.bin`` pickle file.

        Returns:
            The name it was loaded under.

        Raises:
            AdapterFormatError, UnsupportedAdapterError, UnsafeFileError: Bad files.
            AdapterMismatchError: The adapter does not fit the model.
            LorakitError: The name is invalid or already loaded, or adapters are merged.
        """
        return self._load([(name, source)], trust_pickle=trust_pickle)[0]

    def load_adapters(
        self,
        sources: str | Path | Sequence[str | Path | Adapter] | Mapping[str, str | Path | Adapter],
        *,
        trust_pickle: bool = False,
    ) -> list[str]:
        """Load several adapters in one call: all of them, or on any error none.

        Every adapter is read and checked before the first is installed, and each
        layer's factor bank grows once for all of them, so this is faster than one
        :meth:`load_adapter` call per adapter.

        Args:
            sources: A list of adapter folders, hub ids or :class:`Adapter` objects, each
                loaded under its own name. Or a mapping from name to such a source. Or
                one folder written by :meth:`save_adapters` or in PEFT's multi-adapter
                layout, which also restores the active stack it records.
            trust_pickle: Allow ``adapter_model.bin`` pickle files.

        Returns:
            The names loaded, in order.

        Raises:
            The errors of :meth:`load_adapter`, and LorakitError when two adapters
            would get the same name.
        """
        if isinstance(sources, (str, os.PathLike)):
            from lorakit.runtime.persist import load_adapters

            return load_adapters(self, sources, trust_pickle=trust_pickle)
        if isinstance(sources, Mapping):
            entries = list(sources.items())
        else:
            entries = [(None, source) for source in sources]
        if not entries:
            raise LorakitError(
                "The list given to load_adapters() is empty, so there are no adapters to load. Pass a list of "
                "folders, a mapping from name to folder, or one folder of adapters."
            )
        return self._load(entries, trust_pickle=trust_pickle)

    def _load(self, entries: list[tuple[str | None, str | Path | Adapter]], *, trust_pickle: bool) -> list[str]:
        """Read and check every ``(name, source)``, then install them all, or on any error none."""
        modules = dict(self.model.named_modules(remove_duplicate=False))  # taken before this load wraps any layer
        checked, shapes = self._check_sources(entries, modules, trust_pickle=trust_pickle)
        started: list[str] = []
        try:
            for path, layer_shapes in shapes.items():
                self._wrap_lora_layer(path).reserve(layer_shapes, self.adapter_dtype)
            for name, source in checked:
                if isinstance(source, Adapter):
                    adapter = source
                else:
                    adapter = read_adapter(source, name, trust_pickle=trust_pickle)
                    # Check again with the values, because the file may have changed since the first check.
                    validate_adapter(adapter, self.model, modules=modules)
                started.append(name)
                self._records[name] = self._install(name, adapter)
                del adapter  # unmap the file before the next one is read
        except BaseException:
            for name in started:
                self._records.pop(name, None)
                self._uninstall(name)
            self._drop_unused()  # layers and banks reserved for adapters that were not reached
            raise
        self.state.version += 1
        for name in started:
            record = self._records[name]
            origin = f" from {record.source}" if record.source else ""
            logger.info("Loaded adapter %r (%d modules)%s", name, len(record.module_paths), origin)
        return started

    def _check_sources(
        self,
        entries: list[tuple[str | None, str | Path | Adapter]],
        modules: dict[str, nn.Module],
        *,
        trust_pickle: bool,
    ) -> tuple[list[tuple[str, Path | Adapter]], dict[str, list[tuple[torch.Size, torch.Size]]]]:
        """Check every ``(name, source)`` against the model, changing nothing.

        With several adapters from files, only each file's header is read here, and the
        weights later when the adapter is installed. Reading the weights maps part of the
        file into memory, so reading every adapter up front would raise the peak memory.

        Returns:
            ``(name, source)`` pairs to install, where a file source is its local folder,
            and per module path the ``(lora_A.shape, lora_B.shape)`` of every adapter.
        """
        checked: list[tuple[str, Path | Adapter]] = []
        seen: set[str] = set()
        shapes: dict[str, list[tuple[torch.Size, torch.Size]]] = {}
        shapes_only = len(entries) > 1
        for name, source in entries:
            if isinstance(source, Adapter):
                adapter = source
            else:
                adapter = read_adapter(source, name, trust_pickle=trust_pickle, shapes_only=shapes_only)
            name = name or adapter.name
            self._check_new_name(name)
            if name in seen:
                raise LorakitError(
                    f"Two of the adapters to load are named {name!r}. Pass a mapping from name to folder "
                    "to give them different names."
                )
            self._check_not_merged("load an adapter")
            validate_adapter(adapter, self.model, modules=modules)
            seen.add(name)
            for path, module in adapter.modules.items():
                shapes.setdefault(path, []).append((module.lora_A.shape, module.lora_B.shape))
            if shapes_only and not isinstance(source, Adapter):
                checked.append((name, Path(adapter.source)))  # type: ignore[arg-type]  # the local folder, even for a hub id
            else:
                checked.append((name, adapter))
        return checked, shapes

    def _check_new_name(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise LorakitError(
                f"Invalid adapter name {name!r}: use letters, digits, '_' and '-' only (no dots or spaces)."
            )
        if name in self._records:
            raise LorakitError(
                f"An adapter named {name!r} is already loaded; unload it first (unload_adapter({name!r})) "
                "or load the new one under another name."
            )

    def _install(self, name: str, adapter: Adapter) -> AdapterRecord:
        fan_in_fan_out = {}
        for path, module in adapter.modules.items():
            layer = self._wrap_lora_layer(path)
            layer.add(name, module, self.adapter_dtype, dropout=float(adapter.config.get("lora_dropout") or 0.0))
            fan_in_fan_out[path] = layer.kind == "conv1d"
        copy_paths = []
        for path, tensors in adapter.module_copies.items():
            if is_embedding_base_copy(path):
                continue  # identical to the base embedding: validate_adapter checked it
            layer = self._wrap_copy_layer(path)
            layer.add(name, _make_copy(layer.base_module, tensors))
            copy_paths.append(path)
        return AdapterRecord(
            name=name,
            config=dict(adapter.config),
            module_paths=list(adapter.modules),
            copy_paths=copy_paths,
            source=str(adapter.source) if adapter.source else None,
            fan_in_fan_out=fan_in_fan_out,
        )

    def _wrap_lora_layer(self, path: str) -> LoraLayer:
        if path in self._lora_layers:
            return self._lora_layers[path]
        base = self.model.get_submodule(path)
        shape = layer_shape(base)
        if shape is None:  # validate_adapter refuses these first
            raise AdapterMismatchError(f"Module {path!r} is a {type(base).__name__}, which LoRA cannot target.")
        layer = LoraLayer(base, shape[0], self.state)
        _set_submodule(self.model, path, layer)
        self._lora_layers[path] = layer
        return layer

    def _wrap_copy_layer(self, path: str) -> ModuleCopiesLayer:
        if path in self._copy_layers:
            return self._copy_layers[path]
        base = self.model.get_submodule(path)
        if isinstance(base, LoraLayer):
            raise AdapterMismatchError(
                f"Module {path!r} carries LoRA factors of another adapter and cannot also be a full copy "
                "(modules_to_save)."
            )
        layer = ModuleCopiesLayer(base, self.state)
        _set_submodule(self.model, path, layer)
        self._copy_layers[path] = layer
        return layer

    def _uninstall(self, name: str) -> None:
        """Remove every trace of ``name`` from the layers, and unwrap layers left with no adapters."""
        for layer in self._lora_layers.values():
            layer.remove(name)
        for layer in self._copy_layers.values():
            layer.remove(name)
        self._drop_unused()

    def _drop_unused(self) -> None:
        """Drop empty banks, and put the base module back for every layer without adapters."""
        for path, layer in list(self._lora_layers.items()):
            layer.drop_empty_banks()
            if not layer.adapter_names:
                _set_submodule(self.model, path, layer.base_layer)
                del self._lora_layers[path]
        for path, layer in list(self._copy_layers.items()):
            if not layer.adapter_names:
                _set_submodule(self.model, path, layer.base_module)
                del self._copy_layers[path]

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name``; it leaves the active stack if it was in it (logged)."""
        self._require(name)
        if self.state.merged is not None and name in dict(self.state.merged):
            raise MergeError(f"Adapter {name!r} is merged into the base weights; call unmerge() before unloading it.")
        if name in self.active:
            logger.warning("Adapter %r was active; the active stack is now %s", name, self._describe(self._without(name)))
            self.state.active = self._without(name)
        self._uninstall(name)
        del self._records[name]
        self.state.version += 1
        logger.info("Unloaded adapter %r", name)

    def _without(self, name: str) -> Stack:
        return tuple((n, w) for n, w in self.state.active if n != name)

    # Training and saving ------------------------------------------------------------

    def add_adapter(self, name: str, config: Any, *, trainable: bool = True) -> str:
        """Add a new adapter built from a PEFT ``LoraConfig``, initialised as PEFT does (``lora_B`` zero).

        With ``trainable=True`` its parameters get ``requires_grad`` and the base model's
        parameters are frozen (as ``get_peft_model`` does); the adapter is not activated.
        """
        from lorakit.runtime.fresh import new_adapter

        self._check_new_name(name)
        adapter = new_adapter(name, copy.deepcopy(config), self.model, self.adapter_dtype)
        self.load_adapter(adapter, name)
        if trainable:
            self.set_trainable(name, True)
        return name

    def set_trainable(self, name: str, trainable: bool = True) -> None:
        """Make adapter ``name`` trainable or frozen; making one trainable freezes the base model."""
        self._require(name)
        for parameter in self._adapter_parameters(name):
            parameter.requires_grad_(trainable)
        self._records[name].trainable = trainable
        if trainable:
            self._freeze_base()

    def _adapter_parameters(self, name: str) -> list[nn.Parameter]:
        parameters = []
        for layer in self._lora_layers.values():
            for store in (layer.lora_A, layer.lora_B, layer.lora_bias):
                if name in store:
                    parameters.append(store[name])
        for layer in self._copy_layers.values():
            if name in layer.copies:
                parameters.extend(layer.copies[name].parameters())
        return parameters

    def _freeze_base(self, log_level: int = logging.INFO) -> None:
        adapter_ids = {id(p) for name in self._records for p in self._adapter_parameters(name)}
        frozen = 0
        for parameter in self.model.parameters():
            if id(parameter) not in adapter_ids and parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += 1
        if frozen:
            logger.log(log_level, "Froze %d parameter tensors of the base model so that only adapters train", frozen)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Return the parameters that require gradients (those of trainable adapters)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def export_adapter(self, name: str) -> Adapter:
        """Return adapter ``name`` as an :class:`Adapter` with its current tensors."""
        from lorakit.runtime.persist import export_adapter

        return export_adapter(self, name)

    def save_adapter(self, name: str, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write adapter ``name`` as a PEFT folder (atomically) that PEFT and lorakit load."""
        from lorakit.adapters.io import write_adapter

        return write_adapter(self.export_adapter(name), path, overwrite=overwrite)

    def save_adapters(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write every adapter and the active stack to one folder; :meth:`load_adapters` restores them."""
        from lorakit.runtime.persist import save_adapters

        return save_adapters(self, folder, overwrite=overwrite)

    # Activating and routing ----------------------------------------------------------

    def activate(self, spec: RowSpec | Mapping[str, float]) -> None:
        """Choose what the model applies: ``None`` (the base model), a name, or ``{name: weight}``.

        Weights may be negative or zero. Activating never loads, trains or merges anything.
        """
        stack = make_stack(spec, self._records, what="activation")
        if self.state.merged is not None and stack != self.state.merged:
            raise MergeError(
                f"The stack {self._describe(self.state.merged)} is merged into the base weights; "
                "call unmerge() before activating another one."
            )
        self.state.active = stack
        logger.debug("Active stack: %s", self._describe(stack))

    @contextmanager
    def route(self, adapter_names: Sequence[RowSpec]) -> Iterator[RoutingPlan]:
        """Route each row of the batches run inside this block to its own adapter or stack.

        Args:
            adapter_names: One entry per row: a name, ``{name: weight}``, or ``None`` for the base model.
        """
        self._check_not_merged("route rows to adapters")
        if isinstance(adapter_names, (str, Mapping)) or adapter_names is None:
            raise RoutingError(
                f"Invalid adapter_names {adapter_names!r}: expected a list with one entry per row of the batch."
            )
        stacks = [make_stack(spec, self._records, what=f"adapter for row {row}") for row, spec in enumerate(adapter_names)]
        previous = self.state.routing
        self.state.routing = RoutingPlan.build(stacks, device=_model_device(self.model))
        try:
            yield self.state.routing
        finally:
            self.state.routing = previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, adapter_names: Sequence[RowSpec] | None = None, **kwargs: Any) -> Any:
        """Run the model; with ``adapter_names``, each row uses its own adapter or stack."""
        if adapter_names is None:
            return self.model(*args, **kwargs)
        _check_row_count(adapter_names, _batch_size(args, kwargs))
        with self.route(adapter_names):
            return self.model(*args, **kwargs)

    def generate(self, *args: Any, adapter_names: Sequence[RowSpec] | None = None, **kwargs: Any) -> Any:
        """Call the model's ``generate``; with ``adapter_names``, each row keeps its adapter, beams included."""
        if adapter_names is None:
            return self.model.generate(*args, **kwargs)
        _check_row_count(adapter_names, _batch_size(args, kwargs))
        with self.route(adapter_names):
            self.state.routing_expands = True
            try:
                return self.model.generate(*args, **kwargs)
            finally:
                self.state.routing_expands = False

    # Merging -------------------------------------------------------------------------

    def merge(self, spec: RowSpec | Mapping[str, float] | None = None) -> None:
        """Fold a stack (the active one by default) into the base weights, in place.

        The sum is computed in float32 and stored in the model's dtype. Every merged
        weight is checked before the first one is written: a non-finite result changes
        nothing. The original tensors are kept, so :meth:`unmerge` restores them bit for bit.

        Raises:
            MergeError: Something is merged already, or a merged weight is not finite.
        """
        if self.state.merged is not None:
            raise MergeError(f"The stack {self._describe(self.state.merged)} is already merged; call unmerge() first.")
        stack = self.state.active if spec is None else make_stack(spec, self._records, what="merge")
        updates = self._merged_parameters(stack)
        for (path, parameter_name), value in updates.items():
            parameter = self.model.get_submodule(path).get_parameter(parameter_name)
            self._originals[(path, parameter_name)] = parameter.data
            parameter.data = value
        self.state.active = stack
        self.state.merged = stack
        logger.info("Merged %s into the base weights (%d tensors)", self._describe(stack), len(updates))

    def _merged_parameters(self, stack: Stack) -> dict[tuple[str, str], torch.Tensor]:
        updates: dict[tuple[str, str], torch.Tensor] = {}
        for path, layer in self._lora_layers.items():
            fan_in_fan_out = layer.kind == "conv1d"
            for parameter_name, value in layer.merged_parameters(stack, fan_in_fan_out).items():
                updates[(f"{path}.base_layer", parameter_name)] = value
        for path, layer in self._copy_layers.items():
            if any(name in layer.copies for name, _ in stack):
                for parameter_name, value in layer.stack_parameters(stack).items():
                    updates[(f"{path}.base_module", parameter_name)] = value.detach().clone()
        broken = [f"{path}.{name}" for (path, name), value in updates.items() if not torch.isfinite(value).all()]
        if broken:
            raise MergeError(
                f"Merging {self._describe(stack)} gives non-finite weights in {len(broken)} tensors "
                f"({', '.join(broken[:5])}); the base weights were not changed. Check the adapters for NaN or inf."
            )
        return updates

    def unmerge(self) -> None:
        """Restore the weights that :meth:`merge` replaced, bit for bit."""
        if self.state.merged is None:
            raise MergeError("Nothing is merged; unmerge() undoes a merge().")
        for (path, parameter_name), original in self._originals.items():
            self.model.get_submodule(path).get_parameter(parameter_name).data = original
        self._originals.clear()
        logger.info("Unmerged %s", self._describe(self.state.merged))
        self.state.merged = None

    def unload(self) -> nn.Module:
        """Remove every adapter and wrapper, returning the plain model (merged weights stay merged).

        After a :meth:`merge`, this is PEFT's ``merge_and_unload``.
        """
        self._originals.clear()
        for name in list(self._records):
            self._uninstall(name)
        self._records.clear()
        self.state = RuntimeState()
        del self.model.lorakit_runtime
        return self.model

    def _check_not_merged(self, action: str) -> None:
        if self.state.merged is not None:
            raise MergeError(
                f"Cannot {action} while {self._describe(self.state.merged)} is merged into the base weights; "
                "call unmerge() first."
            )

    @staticmethod
    def _describe(stack: Stack) -> str:
        if not stack:
            return "the base model"
        return " + ".join(f"{weight:g} * {name}" for name, weight in stack)


class _RuntimeRef:
    """A plain attribute on the model pointing back at its runtime (not a submodule)."""

    def __init__(self, runtime: MultiAdapterModel) -> None:
        self.runtime = runtime


def runtime_of(model: nn.Module) -> MultiAdapterModel | None:
    """Return the runtime that wraps ``model``, if any."""
    ref = getattr(model, "lorakit_runtime", None)
    return ref.runtime if isinstance(ref, _RuntimeRef) else None


def _check_plain_model(model: nn.Module) -> None:
    # A model can contain PEFT objects only once peft is imported, so a process that never
    # imported peft does not import it here (importing it takes about 20 MB).
    peft_model = sys.modules.get("peft.peft_model")
    tuners_utils = sys.modules.get("peft.tuners.tuners_utils")
    if peft_model is not None and isinstance(model, peft_model.PeftModel):
        raise LorakitError(
            "The model is a PeftModel; lorakit wraps the base model itself. Pass peft_model.unload() "
            "(or the base model you built it from) and load the adapter folders with load_adapter()."
        )
    if runtime_of(model) is not None:
        raise LorakitError(
            "This model already has a lorakit runtime; use it (lorakit.runtime_of(model)) to load more adapters. "
            "Two runtimes on one model would wrap its layers twice."
        )
    if tuners_utils is None:
        return
    peft_layers = [name for name, module in model.named_modules() if isinstance(module, tuners_utils.BaseTunerLayer)]
    if peft_layers:
        raise LorakitError(
            f"The model already contains PEFT adapter layers ({peft_layers[0]}, and {len(peft_layers) - 1} more); "
            "calling PEFT twice on one base nests wrappers. Pass a clean base model."
        )


def _model_dtype(model: nn.Module) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def _make_copy(base_module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """Return a frozen copy of ``base_module`` with the adapter's parameters in it."""
    clone = copy.deepcopy(base_module)
    for parameter_name, parameter in clone.named_parameters():
        if parameter_name in tensors:
            parameter.data = tensors[parameter_name].to(parameter.device, parameter.dtype).clone()
        parameter.requires_grad_(False)
    return clone


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for key in ("input_ids", "inputs_embeds", "pixel_values", "input_features"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    for value in args:
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return None


def _check_row_count(adapter_names: Sequence[RowSpec], batch_size: int | None) -> None:
    if isinstance(adapter_names, (str, Mapping)):
        raise RoutingError(
            f"Invalid adapter_names {adapter_names!r}: expected a list with one entry per row of the batch."
        )
    if batch_size is not None and len(adapter_names) != batch_size:
        raise RoutingError(
            f"adapter_names has {len(adapter_names)} entries but the batch has {batch_size} rows; "
            "give one entry per row (None for the base model)."
        )
