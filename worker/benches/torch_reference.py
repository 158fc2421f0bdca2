"""PyTorch CPU reference for `cargo bench -p wf-worker --bench train_throughput`.

Same shapes, loss (0.1 ListNet + 1.0 MSE over z-scored targets, one trading day per
batch), optimizer (AdamW lr 1e-3, weight decay 1e-4), gradient clipping (norm 1.0) and
thread count as the Candle side, on the CPU or (9th argument "cuda") the GPU. Prints one
JSON line.
"""
import json
import resource
import sys
import time

import torch

kind = sys.argv[1]
stocks, days, features, heads, threads, epochs = (int(a) for a in sys.argv[2:8])
shape = [int(h) for h in sys.argv[8].split(",")]
device = torch.device(sys.argv[9] if len(sys.argv) > 9 else "cpu")
torch.set_num_threads(threads)
torch.manual_seed(0)

lookback = shape[0] if kind == "patchtst" else 1
batches = []
for _ in range(days):
    x = torch.randn(stocks, lookback * features)
    y = torch.randn(stocks, heads)
    y = (y - y.mean(0)) / y.std(0, unbiased=False)
    batches.append((x.to(device), y.to(device), torch.softmax(y, dim=0).to(device)))

class PatchTst(torch.nn.Module):
    """lookback, patch, d_model, layers, heads: pre-norm encoder, GELU, no dropout."""

    def __init__(self, lookback, patch, d_model, layers, attention_heads):
        super().__init__()
        self.patches, self.width = lookback // patch, patch * features
        self.embed = torch.nn.Linear(self.width, d_model)
        self.position = torch.nn.Parameter(torch.randn(self.patches, d_model) * 0.1)
        layer = torch.nn.TransformerEncoderLayer(
            d_model, attention_heads, 2 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, heads)

    def forward(self, x):
        x = self.embed(x.reshape(x.shape[0], self.patches, self.width)) + self.position
        return self.head(self.norm(self.encoder(x)).mean(1))


if kind == "patchtst":
    model = PatchTst(*shape)
else:
    layers = []
    sizes = [features] + shape + [heads]
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
            layers.append(torch.nn.Dropout(0.1))
    model = torch.nn.Sequential(*layers)
model = model.to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)


def epoch():
    model.train()
    for x, y, p in batches:
        scores = model(x)
        listnet = -(p * torch.log_softmax(scores, dim=0)).sum(0)
        mse = ((scores - y) ** 2).mean(0)
        loss = (0.1 * listnet + 1.0 * mse).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def synchronize():
    """Waits for queued GPU work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


epoch()  # warm-up
synchronize()
start = time.perf_counter()
for _ in range(epochs):
    epoch()
synchronize()
train_seconds = time.perf_counter() - start

model.eval()
with torch.no_grad():
    model(batches[0][0])
    synchronize()
    start = time.perf_counter()
    for x, _, _ in batches:
        model(x)
    synchronize()
    score_seconds = time.perf_counter() - start

print(json.dumps({
    "torch": torch.__version__,
    "train_stock_days_per_s": stocks * days * epochs / train_seconds,
    "score_days_per_s": days / score_seconds,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
