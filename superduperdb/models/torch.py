"""PyTorch modules as models: batched inference and a training loop (needs the ``torch`` extra).

A :class:`TorchModel` stacks preprocessed inputs into one tensor per batch,
runs the module under ``torch.no_grad()`` in eval mode, and splits the output
back into one value per row. ``fit`` trains with shuffled mini-batches,
records a per-epoch history in ``model.metrics`` and, with ``keep_best=``,
restores the weights of the best epoch.

torch is imported only when a model runs, never by ``import superduperdb``.

>>> import torch
>>> from superduperdb import superduper
>>> m = superduper(torch.nn.Linear(2, 1), postprocess=float)
>>> type(m).__name__, m.identifier
('TorchModel', 'Linear')
>>> _ = torch.nn.init.ones_(m.object.weight), torch.nn.init.zeros_(m.object.bias)
>>> m.predict([[1.0, 2.0], [3.0, 4.0]])
[3.0, 7.0]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, QueryError
from superduperdb.components.component import artifact
from superduperdb.components.metric import named_metrics as _named_metrics
from superduperdb.components.model import Model

logger = logging.getLogger(__name__)

LOSSES = ('cross_entropy', 'mse', 'l1', 'bce_with_logits')
OPTIMIZERS = ('adam', 'adamw', 'sgd')


def _torch() -> Any:
    return require('torch', extra='torch', what='TorchModel')


@dataclass(kw_only=True)
class TorchModel(Model):
    """Wraps a ``torch.nn.Module``.

    ``preprocess`` maps one input to a tensor (a numpy array or nested list is
    converted); ``collate`` turns a list of those into the module's batch
    (default ``torch.stack``; inputs that are tuples are stacked position by
    position and passed as several arguments). The output is split per row
    and ``postprocess`` maps each row's output to what is stored (e.g.
    ``lambda t: int(t.argmax())``). Without a ``preprocess``/``postprocess``
    function, the module's own ``preprocess``/``postprocess`` methods are used
    when it defines them. Rows left as tensors are stored with a tensor
    encoder; 0-d tensors become Python numbers.
    """

    device: str = 'cpu'
    batch_size: int = 32
    collate: Callable[[list[Any]], Any] | None = artifact()

    @classmethod
    def wrap(cls, module: Any, identifier: str | None = None, **kwargs: Any) -> TorchModel:
        """Build a model around ``module`` (the identifier defaults to its class name)."""
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f'TorchModel wraps a torch.nn.Module, got {type(module).__module__}.'
                f'{type(module).__qualname__}. Wrap plain callables with superduper(f, identifier=...).'
            )
        return cls(identifier or type(module).__name__, object=module, **kwargs)

    # ----- inference -------------------------------------------------------------
    def _run(self, batch: Sequence[Any]) -> list[Any]:
        pre = self._module_hook('preprocess') if self.preprocess is None else None
        if pre is not None:
            batch = [pre(x) for x in batch]
        outputs = super()._run(batch)
        if self.postprocess is not None:
            return outputs
        post = self._module_hook('postprocess')
        if post is not None:
            return [post(y) for y in outputs]
        return [_plain(y) for y in outputs]

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        torch = _torch()
        if not inputs:
            return []
        module = self._module()
        module.eval()
        with torch.no_grad():
            outputs = self._forward(module, self._collate(list(inputs)))
        return _split_rows(outputs, len(inputs))

    def _forward(self, module: Any, batch: Any) -> Any:
        if isinstance(batch, tuple):
            return module(*batch)
        if isinstance(batch, dict):
            return module(**batch)
        return module(batch)

    def _collate(self, items: list[Any]) -> Any:
        if self.collate is not None:
            return _to_device(self.collate(items), self.device)
        return _to_device(_stack(items, self.identifier), self.device)

    def _module_hook(self, name: str) -> Callable[[Any], Any] | None:
        """The module's own ``preprocess``/``postprocess`` method; a submodule of that name is a layer."""
        hook = getattr(self.object, name, None)
        if not callable(hook) or isinstance(hook, _torch().nn.Module):
            return None
        return hook  # type: ignore[no-any-return]

    def _module(self) -> Any:
        if self.object is None:
            raise ConfigError(
                f'TorchModel {self.identifier!r} has no module: build it with superduper(module) or '
                'TorchModel.wrap(module).'
            )
        return self.object.to(self.device)

    # ----- training ----------------------------------------------------------------
    def fit_arrays(
        self,
        X: Sequence[Any],
        y: Sequence[Any] | None,
        *,
        epochs: int = 5,
        batch_size: int | None = None,
        optimizer: str | Callable[..., Any] = 'adam',
        lr: float = 1e-3,
        loss: str | Callable[[Any, Any], Any] = 'cross_entropy',
        validation: tuple[Sequence[Any], Sequence[Any]] | None = None,
        metrics: Sequence[Any] | None = None,
        keep_best: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Train on ``X``/``y`` (already through ``preprocess``); return the per-epoch history.

        ``validation=(X_valid, y_valid)``, in the same form as ``X``/``y``, gives
        ``valid_loss`` and one ``valid_<name>`` list per metric (a
        :class:`~superduperdb.components.metric.Metric` or a callable
        ``(predictions, targets) -> float`` applied to postprocessed outputs).
        ``keep_best`` names a metric to maximize (or ``'loss'``, the validation
        loss, to minimize); the weights of that epoch are restored at the end.
        """
        torch = _torch()
        if kwargs:
            raise ConfigError(
                f'TorchModel {self.identifier!r}: fit() got unknown settings {sorted(kwargs)}; it takes '
                'epochs, batch_size, optimizer, lr, loss, validation, metrics, keep_best and seed.'
            )
        if y is None:
            raise QueryError(
                f'TorchModel {self.identifier!r} trains on targets: pass y= (a key, or a list of targets).'
            )
        if len(X) != len(y):
            raise QueryError(f'fit: {len(X)} inputs but {len(y)} targets; they must pair up.')
        if not len(X):
            raise QueryError('fit: no training rows; nothing to train on.')
        loss_fn = _loss_function(loss)
        named_metrics = _named_metrics(metrics or ())
        if (named_metrics or keep_best) and validation is None:
            raise QueryError(
                'fit: metrics= and keep_best= are measured on validation data; pass '
                'validation=(X_valid, y_valid) too.'
            )
        if keep_best is not None:
            keep_best = keep_best.removeprefix('valid_')
            if keep_best != 'loss' and keep_best not in named_metrics:
                raise ConfigError(
                    f'keep_best={keep_best!r} is neither "loss" nor one of the metrics '
                    f'{sorted(named_metrics)}; pass the metric in metrics=[...].'
                )
        step = max(1, batch_size or self.batch_size)
        module = self._module()
        pre = self._module_hook('preprocess') if self.preprocess is None else None
        inputs = [pre(x) for x in X] if pre is not None else list(X)
        targets = self._targets(y)
        if validation is not None:
            X_valid, y_valid = validation
            if len(X_valid) != len(y_valid):
                raise QueryError(f'fit: validation has {len(X_valid)} inputs but {len(y_valid)} targets.')
            valid_inputs = [pre(x) for x in X_valid] if pre is not None else list(X_valid)
            valid_targets = list(y_valid)

        history: dict[str, Any] = {'train_loss': []}
        if validation is not None:
            history['valid_loss'] = []
            for name in named_metrics:
                history[f'valid_{name}'] = []
        best: tuple[float, int, dict[str, Any]] | None = None
        with torch.random.fork_rng(devices=[]):  # reproducible, without touching the caller's RNG
            torch.manual_seed(seed)
            opt = _optimizer(optimizer, module.parameters(), lr)
            generator = torch.Generator().manual_seed(seed)
            for epoch in range(epochs):
                order = torch.randperm(len(inputs), generator=generator).tolist()
                history['train_loss'].append(
                    self._train_epoch(module, opt, loss_fn, inputs, targets, order, step)
                )
                if validation is not None:
                    scores = self._validate(module, valid_inputs, valid_targets, loss_fn, named_metrics, step)
                    for name, score in scores.items():
                        history[f'valid_{name}'].append(score)
                    if keep_best is not None:
                        score = -scores['loss'] if keep_best == 'loss' else scores[keep_best]
                        if best is None or score > best[0]:  # ties keep the earlier epoch
                            best = (
                                score,
                                epoch,
                                {k: v.detach().clone() for k, v in module.state_dict().items()},
                            )
                logger.info(
                    '%s epoch %d/%d: %s',
                    self.identifier,
                    epoch + 1,
                    epochs,
                    ', '.join(f'{k}={v[-1]:.4g}' for k, v in history.items()),
                )
        module.eval()
        if best is not None:
            module.load_state_dict(best[2])
            history['best_epoch'] = best[1]
            history['keep_best'] = keep_best
        return history

    def _train_epoch(
        self,
        module: Any,
        opt: Any,
        loss_fn: Callable[[Any, Any], Any],
        inputs: list[Any],
        targets: Any,
        order: list[int],
        step: int,
    ) -> float:
        """One pass over the shuffled mini-batches; the mean training loss."""
        module.train()
        total = 0.0
        for lo in range(0, len(order), step):
            idx = order[lo : lo + step]
            batch = self._collate([inputs[i] for i in idx])
            target = _to_device(targets[idx], self.device)
            opt.zero_grad()
            value = loss_fn(self._forward(module, batch), target)
            value.backward()
            opt.step()
            total += float(value.detach()) * len(idx)
        return total / len(order)

    def _targets(self, y: Sequence[Any]) -> Any:
        torch = _torch()
        try:
            first = y[0]
            if isinstance(first, torch.Tensor):
                return torch.stack(list(y))
            if type(first).__module__ == 'numpy' and getattr(first, 'ndim', 0) > 0:
                return torch.from_numpy(_numpy().stack(list(y)))  # stack copies: writable
            return torch.as_tensor(_numpy().asarray(list(y)))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise QueryError(
                f'TorchModel {self.identifier!r}: cannot make a tensor of the targets ({exc}). Targets '
                'must be numbers (class indices for cross_entropy), arrays or tensors of one shape.'
            ) from exc

    def _validate(
        self,
        module: Any,
        inputs: list[Any],
        targets: list[Any],
        loss_fn: Callable[[Any, Any], Any],
        metrics: dict[str, Callable[[list[Any], list[Any]], float]],
        step: int,
    ) -> dict[str, float]:
        torch = _torch()
        module.eval()
        target_tensor = self._targets(targets)
        predictions: list[Any] = []
        total = 0.0
        with torch.no_grad():
            for lo in range(0, len(inputs), step):
                outputs = self._forward(module, self._collate(inputs[lo : lo + step]))
                target = _to_device(target_tensor[lo : lo + step], self.device)
                total += float(loss_fn(outputs, target)) * len(target)
                if metrics:
                    predictions.extend(_split_rows(outputs, len(target)))
        scores = {'loss': total / len(inputs)}
        if metrics:
            post = self.postprocess or self._module_hook('postprocess') or _plain
            predictions = [post(p) for p in predictions]
            for name, metric in metrics.items():
                scores[name] = float(metric(predictions, targets))
        return scores


# ----- helpers ---------------------------------------------------------------------
def _numpy() -> Any:
    import numpy

    return numpy


def _as_tensor(x: Any) -> Any:
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x
    if type(x).__module__ == 'numpy':
        return torch.from_numpy(_writable(x))
    return torch.as_tensor(x)


def _writable(x: Any) -> Any:
    """A contiguous array torch may share; decoded arrays are read-only views of bytes: copy those."""
    np = _numpy()
    array = np.ascontiguousarray(x)
    return array if array.flags.writeable else array.copy()


def _stack(items: list[Any], identifier: str) -> Any:
    torch = _torch()
    first = items[0]
    if isinstance(first, tuple):
        return tuple(_stack([item[i] for item in items], identifier) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _stack([item[k] for item in items], identifier) for k in first}
    tensors = [_as_tensor(x) for x in items]
    try:
        return torch.stack(tensors)
    except RuntimeError as exc:
        shapes = sorted({tuple(t.shape) for t in tensors})
        raise QueryError(
            f'TorchModel {identifier!r}: cannot stack inputs of shapes {shapes[:5]} into one batch. '
            'Make preprocess return tensors of one shape, or pass collate= to build batches.'
        ) from exc


def _to_device(batch: Any, device: str) -> Any:
    if isinstance(batch, tuple):
        return tuple(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if hasattr(batch, 'to') else batch


def _split_rows(outputs: Any, n: int) -> list[Any]:
    """One output per row: a (n, ...) tensor by rows; tuples and dicts of them row-wise."""
    torch = _torch()
    if isinstance(outputs, torch.Tensor):
        if outputs.ndim == 0 or outputs.shape[0] != n:
            raise QueryError(
                f'The module returned a tensor of shape {tuple(outputs.shape)} for a batch of {n}; '
                'its first dimension must be the batch.'
            )
        rows = outputs.detach().cpu()
        return [rows[i] for i in range(n)]
    if isinstance(outputs, (tuple, list)):
        parts = [_split_rows(o, n) for o in outputs]
        return [tuple(p[i] for p in parts) for i in range(n)]
    if isinstance(outputs, dict):
        split = {k: _split_rows(v, n) for k, v in outputs.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(n)]
    raise QueryError(f'The module returned a {type(outputs).__name__}; expected a tensor, tuple or dict.')


def _plain(value: Any) -> Any:
    """0-d tensors become Python numbers (every database stores them); others stay as they are."""
    if getattr(value, 'ndim', None) == 0 and hasattr(value, 'item'):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _loss_function(loss: str | Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    if callable(loss):
        return loss
    functional = require('torch.nn.functional', extra='torch', what='TorchModel')

    def mse(outputs: Any, targets: Any) -> Any:
        return functional.mse_loss(outputs, _like(targets, outputs))

    def l1(outputs: Any, targets: Any) -> Any:
        return functional.l1_loss(outputs, _like(targets, outputs))

    def bce_with_logits(outputs: Any, targets: Any) -> Any:
        return functional.binary_cross_entropy_with_logits(outputs, _like(targets, outputs))

    def cross_entropy(outputs: Any, targets: Any) -> Any:
        if targets.is_floating_point() and targets.shape != outputs.shape:
            targets = targets.long()  # class indices that came as floats; same shape: probabilities
        return functional.cross_entropy(outputs, targets)

    table: dict[str, Callable[[Any, Any], Any]] = {
        'cross_entropy': cross_entropy,
        'mse': mse,
        'l1': l1,
        'bce_with_logits': bce_with_logits,
    }
    if loss not in table:
        raise ConfigError(
            f'Unknown loss={loss!r}; use one of {", ".join(repr(n) for n in LOSSES)}, '
            'or a callable (outputs, targets) -> scalar tensor.'
        )
    return table[loss]


def _like(targets: Any, outputs: Any) -> Any:
    """Targets as the outputs' dtype and shape ((n,) targets for (n, 1) outputs)."""
    targets = targets.to(outputs.dtype)
    if targets.shape != outputs.shape and targets.numel() == outputs.numel():
        targets = targets.reshape(outputs.shape)
    return targets


def _optimizer(optimizer: str | Callable[..., Any], params: Any, lr: float) -> Any:
    torch = _torch()
    if callable(optimizer):
        return optimizer(params)
    classes = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW, 'sgd': torch.optim.SGD}
    if optimizer not in classes:
        raise ConfigError(
            f'Unknown optimizer={optimizer!r}; use one of {", ".join(repr(n) for n in OPTIMIZERS)}, '
            'or a callable taking the parameters, e.g. lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9).'
        )
    return classes[optimizer](params, lr=lr)
