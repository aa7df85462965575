from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.base import CLASSIFICATION, ModelFamily
from trainables.flavors import PYTORCH


class MLPNet(nn.Module):
    """Standardises its input; ``forward`` returns class probabilities or de-standardised values."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        width: int,
        depth: int,
        dropout: float,
        classify: bool,
        x_mean: np.ndarray,
        x_std: np.ndarray,
        y_mean: float = 0.0,
        y_std: float = 1.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(width if depth else n_in, n_out))
        self.body = nn.Sequential(*layers)
        self.classify = classify
        self.register_buffer("x_mean", torch.as_tensor(x_mean, dtype=torch.float32))
        self.register_buffer("x_std", torch.as_tensor(x_std, dtype=torch.float32))
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.x_mean) / self.x_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.raw(x)
        if self.classify:
            return torch.softmax(out, dim=1)
        return out.squeeze(1) * self.y_std + self.y_mean


@dataclass
class Epochs:
    """What a ``fit`` trains an MLP on, kept from step to step: tensors on the device, loss, optimizer, shuffling."""

    x: torch.Tensor
    y: torch.Tensor  # class indices, or standardised values
    loss: nn.Module
    opt: torch.optim.Optimizer
    batch: int
    shuffle: torch.Generator


class MLP(ModelFamily):
    """A PyTorch multi-layer perceptron; a budget step is ``per_step`` epochs. Uses CUDA when given a GPU."""

    name = "mlp"
    flavor = PYTORCH
    deterministic = False  # CPU results repeat with the seed; CUDA kernels may not

    def start(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> tuple[MLPNet, Epochs]:
        torch.manual_seed(self.ctx.seed)
        torch.set_num_threads(self.ctx.threads)
        device = torch.device(self.ctx.device)
        classify = self.ctx.task == CLASSIFICATION
        if model is None:
            y_mean, y_std = (0.0, 1.0) if classify else (float(y.mean()), float(y.std() or 1.0))
            model = MLPNet(
                X.shape[1],
                self.ctx.n_classes if classify else 1,
                int(config["width"]),
                int(config["depth"]),
                float(config["dropout"]),
                classify,
                X.mean(axis=0),
                X.std(axis=0) + 1e-8,
                y_mean,
                y_std,
            )
        model = model.to(device)
        xt = torch.as_tensor(X, dtype=torch.float32, device=device)
        yt = torch.as_tensor(y, dtype=torch.long if classify else torch.float32, device=device)
        if not classify:
            yt = (yt - model.y_mean) / model.y_std
        opt = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
        return model, Epochs(
            xt,
            yt,
            nn.CrossEntropyLoss() if classify else nn.MSELoss(),
            opt,
            int(config["batch_size"]),
            torch.Generator(device="cpu").manual_seed(self.ctx.seed),
        )

    def trained(self, model: Any) -> int:
        return getattr(model, "epochs_done", 0)

    def grow(self, model: Any, data: Epochs, units: int) -> Any:
        model.train()
        for _ in range(units):
            for idx in torch.randperm(len(data.x), generator=data.shuffle).split(data.batch):
                idx = idx.to(data.x.device)
                data.opt.zero_grad()
                out = model.raw(data.x[idx])
                loss = data.loss(out if self.ctx.task == CLASSIFICATION else out.squeeze(1), data.y[idx])
                loss.backward()
                data.opt.step()
        model.epochs_done = self.trained(model) + units
        model.eval()
        return model

    @torch.no_grad()
    def _forward(self, model: MLPNet, X: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        return model(torch.as_tensor(X, dtype=torch.float32, device=device)).cpu().numpy()

    def predict_proba(self, model: Any, X: np.ndarray) -> np.ndarray:
        return self._forward(model, X)

    def predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        out = self._forward(model, X)
        return out.argmax(axis=1) if self.ctx.task == CLASSIFICATION else out

    def loggable(self, model: Any) -> Any:
        return model.cpu().eval()
