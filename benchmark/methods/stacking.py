"""Many small networks of one architecture trained as one module: the `stacked` training path.

A power study trains thousands of tiny networks, where per-operation overhead dominates; stacking shares the calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.errors import check_finite_loss
from benchmark.methods.losses import Objective
from benchmark.methods.models import Classifier, ModelOutput, NetworkConfig
from benchmark.methods.training import FitLog, TermMeans, TrainingConfig, TrainingSet, batch_schedule, fit

# A power study trains thousands of tiny networks (16 x 16 images), where a training step is almost all per-operation
# overhead. `StackedClassifier` holds K copies of the protocol's plain `cnn` classifier (same widths, no
# DPE/MHRA/DFPN) and runs them together: each convolution gathers its 3 x 3 taps from a model-major channels-last map
# [K, B, H, W, C] and multiplies them per model with one batched matrix product (taps that only ever read zero
# padding are left out), batch norm runs over K x C channels at once, and the head is one batched product. Every
# model keeps its own parameters, batch-norm statistics and data; the models only share the kernel calls.
# Arithmetic per model is that of the plain network, in a different floating-point order, so a run records which
# path computed it.
# `stack` copies K initialised classifiers in; `unstack` writes the trained parameters and running statistics back,
# so prediction, the teacher store and everything downstream see ordinary networks.


def stackable_config(config: NetworkConfig) -> bool:
    """True for the protocol's plain `cnn` classifier (no DPE, MHRA or DFPN), of one input channel or more (the
    privileged modality's middle three axial slices)."""
    return config.architecture == "cnn" and not (config.dpe or config.mhra or config.dfpn)


def stackable(model: nn.Module) -> bool:
    """True for a plain `cnn` classifier: what `StackedClassifier` can hold."""
    return type(model) is Classifier and stackable_config(model.config)


def _live_taps(size: int, stride: int) -> list[int]:
    """Kernel offsets (0, 1, 2) of a 3 x 3, padding-1 convolution that read at least one real input pixel."""
    outputs = (size - 1) // stride + 1
    return [offset for offset in range(3) if any(0 <= o * stride + offset - 1 < size for o in range(outputs))]


class _GatherTaps(torch.autograd.Function):
    """[K, B, H, W, C] -> [K, B * H' * W', T * C]: the live 3 x 3 taps of every output pixel, per model (im2col).

    The live taps form a rows x cols block of the kernel, so the forward is one strided view of the padded map
    and one copy, whose innermost run is a kernel row's taps and channels (contiguous in this model-major
    layout); the backward adds each tap's gradient back into a zero padded map."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: tuple[int, ...], cols: tuple[int, ...], stride: int) -> Tensor:  # type: ignore[override]
        k, b, h, w, c = x.shape
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        padded = F.pad(x, (0, 0, 1, 1, 1, 1))
        sk, sb, sh, sw, sc = padded.stride()
        window = padded.as_strided((k, b, ho, wo, len(rows), len(cols), c),
                                   (sk, sb, stride * sh, stride * sw, sh, sw, sc),
                                   padded.storage_offset() + rows[0] * sh + cols[0] * sw)
        ctx.shape, ctx.rows, ctx.cols, ctx.stride = x.shape, rows, cols, stride
        return window.reshape(k, b * ho * wo, len(rows) * len(cols) * c)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        k, b, h, w, c = ctx.shape
        s = ctx.stride
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        grad = grad.view(k, b, ho, wo, len(ctx.rows), len(ctx.cols), c)
        padded = grad.new_zeros(k, b, h + 2, w + 2, c)
        cols, first = ctx.cols, ctx.cols[0]
        pairs = s == 2 and len(cols) >= 2 and w + 2 >= first + 2 * wo  # taps j, j+1 of all outputs tile a row
        for ti, i in enumerate(ctx.rows):
            rows = padded[:, :, i:i + s * (ho - 1) + 1:s]
            if pairs:  # one add for two taps: columns first + 2 wo and first + 2 wo + 1 are one contiguous run
                rows[:, :, :, first:first + 2 * wo].view(k, b, ho, wo, 2, c).add_(grad[:, :, :, :, ti, 0:2])
                rest = range(2, len(cols))
            else:
                rest = range(len(cols))
            for tj in rest:
                j = cols[tj]
                rows[:, :, :, j:j + s * (wo - 1) + 1:s].add_(grad[:, :, :, :, ti, tj])
        return padded[:, :, 1:h + 1, 1:w + 1], None, None, None


class _StackedConv(nn.Module):
    """K 3 x 3 convolutions (padding 1, no bias) followed by batch norm and ReLU, on a [K, B, H, W, C] map of
    `size` x `size` pixels. Kernel taps that only ever read padding (a 2 x 2 map's outer ring) are held apart
    and not multiplied: their gradient is zero, so they only decay with AdamW's weight decay."""

    def __init__(self, convs: Sequence[nn.Conv2d], norms: Sequence[nn.BatchNorm2d], size: int) -> None:
        super().__init__()
        first, norm = convs[0], norms[0]
        self.stride = first.stride[0]
        self.size = size
        self.k, self.c_in, self.c_out = len(convs), first.in_channels, first.out_channels
        self.eps, self.momentum = norm.eps, norm.momentum
        self.live = tuple(_live_taps(size, self.stride))  # a contiguous range of kernel offsets
        self.taps = tuple((i, j) for i in self.live for j in self.live)
        self.dead_taps = tuple((i, j) for i in range(3) for j in range(3) if (i, j) not in self.taps)
        # [K, T, C_in, C_out]: row (t, c) of model k's matrix is its weight[:, c, i_t, j_t]
        weights = torch.stack([c.weight.detach() for c in convs])  # [K, C_out, C_in, 3, 3]
        self.weight = nn.Parameter(torch.stack([weights[:, :, :, i, j].transpose(1, 2) for i, j in self.taps], 1))
        self.register_buffer("dead_weight", torch.stack([weights[:, :, :, i, j] for i, j in self.dead_taps], -1)
                             if self.dead_taps else torch.empty(0))
        self.gamma = nn.Parameter(torch.cat([n.weight.detach() for n in norms]))
        self.beta = nn.Parameter(torch.cat([n.bias.detach() for n in norms]))
        self.register_buffer("running_mean", torch.cat([n.running_mean for n in norms]))
        self.register_buffer("running_var", torch.cat([n.running_var for n in norms]))

    @property
    def out_size(self) -> int:
        """Side of the output map."""
        return (self.size - 1) // self.stride + 1

    def forward(self, x: Tensor) -> Tensor:
        """[K, B, H, W, C_in] -> [K, B, H', W', C_out] (a strided view: batch norm runs over [B H' W', K C_out])."""
        k, b, side = self.k, x.shape[1], self.out_size
        if x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"a stacked layer built for {self.size} x {self.size} maps got {tuple(x.shape[2:4])}")
        gathered = _GatherTaps.apply(x, self.live, self.live, self.stride)
        out = torch.bmm(gathered, self.weight.view(k, len(self.taps) * self.c_in, self.c_out))  # [K, N, C_out]
        flat = out.transpose(0, 1).reshape(b * side * side, k * self.c_out)
        flat = F.batch_norm(flat, self.running_mean, self.running_var, self.gamma, self.beta, self.training,
                            self.momentum, self.eps)
        return F.relu_(flat).view(b * side * side, k, self.c_out).transpose(0, 1).view(k, b, side, side, self.c_out)

    def unstack_into(self, convs: Sequence[nn.Conv2d], norms: Sequence[nn.BatchNorm2d], steps: int,
                     dead_decay: float) -> None:
        """Copy model k's weights and batch-norm parameters and statistics back into convs[k], norms[k]; the dead
        taps get the decay AdamW applied to them over `steps` (`dead_decay` = 1 - lr * weight_decay)."""
        with torch.no_grad():
            for index, (conv, norm) in enumerate(zip(convs, norms, strict=True)):
                for t, (i, j) in enumerate(self.taps):
                    conv.weight[:, :, i, j].copy_(self.weight[index, t].t())
                for t, (i, j) in enumerate(self.dead_taps):
                    conv.weight[:, :, i, j].copy_(self.dead_weight[index, :, :, t] * dead_decay ** steps)
                part = slice(index * self.c_out, (index + 1) * self.c_out)
                norm.weight.copy_(self.gamma[part])
                norm.bias.copy_(self.beta[part])
                norm.running_mean.copy_(self.running_mean[part])
                norm.running_var.copy_(self.running_var[part])
                if norm.num_batches_tracked is not None:
                    norm.num_batches_tracked.add_(steps)


class StackedFeatures(dict):
    """One model's features of a stacked forward, built on first access as [B, C, H, W] / [B, C] views."""

    def __init__(self, maps: dict[str, Tensor], index: int) -> None:
        super().__init__()
        self._maps = maps
        self._index = index

    def __missing__(self, name: str) -> Tensor:
        stacked = self._maps[name]  # KeyError names the feature, as a plain dict would
        view = stacked[self._index] if stacked.dim() == 3 else stacked[self._index].permute(0, 3, 1, 2)
        self[name] = view
        return view

    def __contains__(self, name: object) -> bool:
        return name in self._maps


class StackedClassifier(nn.Module):
    """K plain `cnn` classifiers as one module; `forward` takes [B, K, H, W] one-channel images, or [B, K, C, H, W],
    one batch per model."""

    def __init__(self, models: Sequence[Classifier], image_size: int) -> None:
        super().__init__()
        if not models or not all(stackable(m) for m in models):
            raise ValueError("only plain cnn classifiers (no DPE, MHRA or DFPN) can be stacked")
        config = models[0].config
        if any(m.config != config for m in models):
            raise ValueError("stacked classifiers must share one network configuration")
        self.config = config
        self.size = len(models)
        self.layers = nn.ModuleList()
        self.layer_stage: list[int] = []
        size = image_size
        for stage, _ in enumerate(config.widths, start=1):
            blocks = [m.backbone.stages[stage - 1] for m in models]
            for position in range(0, len(blocks[0]), 3):  # (conv, norm, relu) triples
                layer = _StackedConv([b[position] for b in blocks], [b[position + 1] for b in blocks], size)
                self.layers.append(layer)
                self.layer_stage.append(stage)
                size = layer.out_size
        self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach().t() for m in models]).contiguous())
        self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]).unsqueeze(1).contiguous())

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits [B, K, 2], stacked features: stage maps [K, B, H, W, C], final, embedding [K, B, C])."""
        x = images.transpose(0, 1).unsqueeze(-1) if images.dim() == 4 else images.permute(1, 0, 3, 4, 2)
        maps: dict[str, Tensor] = {}
        for layer, stage in zip(self.layers, self.layer_stage, strict=True):
            x = layer(x)
            maps[f"stage{stage}"] = x
        maps["final"] = x
        embedding = x.mean(dim=(2, 3))  # [K, B, C]
        maps["embedding"] = embedding
        logits = torch.baddbmm(self.head_bias, embedding, self.head_weight)  # [K, B, 2]
        return logits.transpose(0, 1), maps

    @staticmethod
    def outputs(logits: Tensor, maps: dict[str, Tensor]) -> list[ModelOutput]:
        """Each model's ModelOutput (views into the stacked tensors, features built when read)."""
        return [ModelOutput(logits[:, k], StackedFeatures(maps, k)) for k in range(logits.shape[1])]

    def unstack_into(self, models: Sequence[Classifier], steps: int, dead_decay: float = 1.0) -> None:
        """Write the trained parameters and batch-norm statistics back into `models` (the ones stacked)."""
        layers = iter(self.layers)
        for stage in range(len(self.config.widths)):
            blocks = [m.backbone.stages[stage] for m in models]
            for position in range(0, len(blocks[0]), 3):
                next(layers).unstack_into([b[position] for b in blocks], [b[position + 1] for b in blocks], steps,
                                           dead_decay)
        with torch.no_grad():
            for index, model in enumerate(models):
                model.head.weight.copy_(self.head_weight[index].t())
                model.head.bias.copy_(self.head_bias[index, 0])


def stack_key(model: nn.Module, data: TrainingSet, config: TrainingConfig) -> str | None:
    """Runs with the same key can train together (same network, schedule and training-set size); None when
    the model cannot be stacked (another architecture, late fusion, DPE/MHRA/DFPN)."""
    if not stackable(model) or data.ct_inputs is not None:
        return None
    return "|".join([model.config.model_dump_json(), config.model_dump_json(), str(len(data.labels)),
                     str(tuple(data.inputs.shape[1:]))])


def fit_stacked(models: Sequence[Classifier], objectives: Sequence[Objective], data: Sequence[TrainingSet],
                config: TrainingConfig, seeds: Sequence[int], device: torch.device) -> list[FitLog]:
    """Train K stackable models (one `stack_key`) together, each with its own objective, data and seed, in place.

    Each model sees exactly the batches `fit` would give it (its own order generator), its own loss, and
    AdamW's update (fused kernel); the gradient of the summed loss with respect to one model's parameters
    is that model's own gradient. It computes on one thread, whatever the process's setting (restored after), so a
    run's bits never depend on which runs it was stacked with: a resumed job, or a claim test reproducing one run
    alone, gets the same bits. Returns one FitLog per model (seconds: its share of the group's time)."""
    keys = {stack_key(m, d, config) for m, d in zip(models, data, strict=True)}
    if None in keys or len(keys) != 1:
        raise ValueError("fit_stacked needs models that share one stack key")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a kernel never splits its work by K, so no run's bits depend on its group
    try:
        return _fit_stacked(models, objectives, data, config, seeds, device)
    finally:
        torch.set_num_threads(threads)


def _fit_stacked(models: Sequence[Classifier], objectives: Sequence[Objective], data: Sequence[TrainingSet],
                 config: TrainingConfig, seeds: Sequence[int], device: torch.device) -> list[FitLog]:
    start = time.perf_counter()
    count, n = len(models), len(data[0].labels)
    stacked = StackedClassifier(models, image_size=data[0].inputs.shape[-1]).to(device).train()
    for objective in objectives:
        objective.to(device).train()
    parameters = [*stacked.parameters(), *(p for objective in objectives for p in objective.parameters())]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    # [K * n, H, W], or [K * n, C, H, W] for C > 1 channels (one stack key: one C)
    images = torch.cat([d.inputs[:, 0] if d.inputs.shape[1] == 1 else d.inputs for d in data]).to(device)
    labels = torch.cat([d.labels for d in data]).to(device)
    teachers = [_on_device(d.teacher, device) for d in data]
    offsets = torch.arange(count).unsqueeze(1) * n
    logs = [FitLog() for _ in models]
    steps = 0
    for epoch, batches in batch_schedule([d.labels for d in data], config, seeds):
        means = [TermMeans() for _ in models]
        for own in batches:  # [K, B]: each model's own sample indices
            index = (own + offsets).t().reshape(-1).to(device)  # [B * K], batch-major
            size = own.shape[1]
            logits, maps = stacked(images[index].view(size, count, *images.shape[1:]))
            outputs = StackedClassifier.outputs(logits, maps)
            targets = labels[index].view(size, count)
            losses = []
            for k, (objective, output, teacher) in enumerate(zip(objectives, outputs, teachers, strict=True)):
                loss, terms = objective(output, targets[:, k], _rows(teacher, own[k]) if teacher else None)
                losses.append(loss)
                means[k].add(terms)
            values = torch.stack(losses)
            for k, value in enumerate(values.detach().tolist()):
                check_finite_loss(value, epoch, means[k].batches, f"run {k + 1} of {count}:" if count > 1 else "")
            optimiser.zero_grad(set_to_none=True)
            values.sum().backward()
            optimiser.step()
            steps += 1
        for log, mean in zip(logs, means, strict=True):
            mean.close(log)
            log.steps = steps
    stacked.unstack_into(models, steps, dead_decay=1 - config.lr * config.weight_decay)
    seconds = time.perf_counter() - start
    for model, log in zip(models, logs, strict=True):
        model.eval()
        log.seconds = seconds / count
    return logs


@dataclass(frozen=True)
class Trainee:
    """One network to train: its objective, training set, schedule and seed."""

    model: nn.Module
    objective: Objective
    data: TrainingSet
    config: TrainingConfig
    seed: int


def fit_all(trainees: Sequence[Trainee], device: torch.device, stacked: bool) -> list[tuple[FitLog, bool]]:
    """Train every trainee in place: each alone (`fit`), or, when `stacked`, those sharing a stack key together
    (`fit_stacked`); returns each one's log and whether it trained stacked."""
    results: dict[int, tuple[FitLog, bool]] = {}
    groups: dict[str, list[int]] = {}
    for index, t in enumerate(trainees):
        key = stack_key(t.model, t.data, t.config) if stacked else None
        if key is None:
            results[index] = (fit(t.model, t.objective, t.data, t.config, t.seed, device), False)
        else:
            groups.setdefault(key, []).append(index)
    for members in groups.values():
        chosen = [trainees[i] for i in members]
        logs = fit_stacked([t.model for t in chosen], [t.objective for t in chosen],  # type: ignore[misc]
                           [t.data for t in chosen], chosen[0].config, [t.seed for t in chosen], device)
        results.update((i, (log, True)) for i, log in zip(members, logs, strict=True))
    return [results[i] for i in range(len(trainees))]


def _on_device(output: ModelOutput | None, device: torch.device) -> ModelOutput | None:
    if output is None:
        return None
    return ModelOutput(output.logits.to(device), {k: v.to(device) for k, v in output.features.items()})


def _rows(output: ModelOutput, index: Tensor) -> ModelOutput:
    """The teacher outputs of one model's batch."""
    index = index.to(output.logits.device)
    return ModelOutput(output.logits[index], {name: value[index] for name, value in output.features.items()})
