#!/usr/bin/env python
"""A copy of the shared suite generator, kept here so `make bench` works in a standalone checkout.

Generate the notebook benchmark suite (12 notebooks) under OUTDIR (default: ./suite in the
current folder).

4 light (pure python), 4 pandas (100k-row frames), 4 scikit-learn
(PCA + KMeans on 20k x 30, one matplotlib plot each).  All outputs are
deterministic (fixed seeds, rounding) so that `pytest --nbval` passes.

Each notebook is written with nbformat and then executed once with nbclient
so that the stored outputs can serve as nbval's reference.

Usage:  python make_suite.py [--no-exec] [OUTDIR]   (needs nbformat, nbclient, ipykernel,
        pandas, scikit-learn, matplotlib)
"""

import os
import sys
import textwrap
import time

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def D(s):
    return textwrap.dedent(s).strip("\n")


# --------------------------------------------------------------------------
# light notebooks: pure python, a few cells, small prints
# --------------------------------------------------------------------------
LIGHT = {
    "light_01_wordcount": [
        "# Word counting\nPure-python text statistics.",
        D("""
        from collections import Counter
        text = '''the quick brown fox jumps over the lazy dog the dog barks
        and the fox runs away into the quiet brown forest while the dog sleeps'''
        words = text.split()
        len(words)
        """),
        D("""
        counts = Counter(words)
        for w, c in counts.most_common(5):
            print(f"{w:>8s} {c}")
        """),
        D("""
        lengths = sorted({len(w) for w in words})
        print("distinct lengths:", lengths)
        print("longest:", max(words, key=lambda w: (len(w), w)))
        """),
    ],
    "light_02_primes": [
        "# Prime sieve",
        D("""
        def sieve(n):
            flags = bytearray([1]) * (n + 1)
            flags[0:2] = b"\\x00\\x00"
            for i in range(2, int(n ** 0.5) + 1):
                if flags[i]:
                    flags[i*i::i] = bytearray(len(range(i*i, n + 1, i)))
            return [i for i, f in enumerate(flags) if f]
        """),
        D("""
        primes = sieve(100_000)
        print("count:", len(primes))
        print("last five:", primes[-5:])
        """),
        D("""
        gaps = [b - a for a, b in zip(primes, primes[1:])]
        print("max gap:", max(gaps), "mean gap:", round(sum(gaps) / len(gaps), 4))
        """),
    ],
    "light_03_fib_json": [
        "# Fibonacci and JSON",
        D("""
        import json
        from functools import lru_cache

        @lru_cache(maxsize=None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        [fib(i) for i in range(15)]
        """),
        D("""
        table = {i: fib(i) for i in range(0, 90, 10)}
        print(json.dumps(table, indent=1))
        """),
        D("""
        ratios = [round(fib(i + 1) / fib(i), 6) for i in range(1, 20)]
        print(ratios[-3:])
        """),
    ],
    "light_04_records": [
        "# Records with dataclasses and dates",
        D("""
        from dataclasses import dataclass
        from datetime import date, timedelta

        @dataclass(order=True)
        class Task:
            due: date
            name: str
            hours: float
        """),
        D("""
        start = date(2024, 1, 1)
        tasks = [Task(start + timedelta(days=(i * 7) % 30), f"task-{i:02d}", (i % 5) + 0.5)
                 for i in range(20)]
        tasks.sort()
        for t in tasks[:5]:
            print(t.due.isoformat(), t.name, t.hours)
        """),
        D("""
        by_month = {}
        for t in tasks:
            by_month.setdefault(t.due.strftime("%Y-%m"), []).append(t.hours)
        {k: sum(v) for k, v in sorted(by_month.items())}
        """),
    ],
}

# --------------------------------------------------------------------------
# pandas notebooks: 100k-row DataFrame with fixed seed, groupby, describe
# --------------------------------------------------------------------------
PANDAS_SETUP = D("""
import numpy as np
import pandas as pd
rng = np.random.default_rng({seed})
n = 100_000
df = pd.DataFrame({{
    "group": rng.choice(list("ABCDEFGHIJ"), size=n),
    "region": rng.choice(["north", "south", "east", "west"], size=n),
    "x": rng.normal(10.0, 3.0, size=n),
    "y": rng.uniform(0.0, 1.0, size=n),
    "qty": rng.integers(1, 50, size=n),
}})
df["value"] = (df["x"] * df["qty"] + rng.normal(0, 1, size=n)).round(6)
df.shape
""")

PANDAS = {
    "pandas_01_groupby": (
        11,
        [
            "# Group statistics on 100k rows",
            PANDAS_SETUP,
            "df.head().round(4)",
            D("""
        g = df.groupby("group")[["x", "y", "value"]].agg(["mean", "std"]).round(4)
        print(g)
        """),
            D("""
        print(df.describe().round(4))
        """),
        ],
    ),
    "pandas_02_timeseries": (
        12,
        [
            "# Time series resampling",
            PANDAS_SETUP,
            D("""
        df.index = pd.date_range("2024-01-01", periods=len(df), freq="min")
        hourly = df["value"].resample("h").mean()
        print(hourly.describe().round(4))
        """),
            D("""
        daily = df.resample("D").agg({"qty": "sum", "x": "mean"}).round(4)
        print(daily.head(10))
        """),
            D("""
        roll = df["x"].rolling(1440).mean().dropna()
        print("rolling mean range:", round(roll.min(), 4), round(roll.max(), 4))
        """),
        ],
    ),
    "pandas_03_merge_pivot": (
        13,
        [
            "# Merge and pivot",
            PANDAS_SETUP,
            D("""
        prices = pd.DataFrame({"group": list("ABCDEFGHIJ"),
                               "price": np.round(np.linspace(1.5, 15.0, 10), 2)})
        m = df.merge(prices, on="group", how="left")
        m["revenue"] = m["qty"] * m["price"]
        print(m.shape)
        """),
            D("""
        pv = m.pivot_table(index="group", columns="region", values="revenue",
                           aggfunc="sum").round(2)
        print(pv)
        """),
            D("""
        print(m.groupby("region")["revenue"].describe().round(4))
        """),
        ],
    ),
    "pandas_04_quantiles": (
        14,
        [
            "# Quantiles, bins and cumulative sums",
            PANDAS_SETUP,
            D("""
        df["bucket"] = pd.cut(df["y"], bins=[0, 0.25, 0.5, 0.75, 1.0])
        q = df.groupby("bucket", observed=True)["x"].quantile([0.1, 0.5, 0.9]).unstack().round(4)
        print(q)
        """),
            D("""
        top = (df.sort_values("value", ascending=False)
                 .groupby("group").head(3)[["group", "value"]]
                 .sort_values(["group", "value"]).round(4))
        print(top.head(12).to_string(index=False))
        """),
            D("""
        c = df.groupby("group")["qty"].sum().cumsum()
        print(c)
        print(df.describe(include="all").loc[["count", "unique"]].T)
        """),
        ],
    ),
}

# --------------------------------------------------------------------------
# scikit-learn notebooks: PCA + KMeans on 20k x 30, one matplotlib plot
# --------------------------------------------------------------------------
SK_SETUP = D("""
import numpy as np
import matplotlib.pyplot as plt
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler
from sklearn.decomposition import PCA
from sklearn.cluster import KMeans
X, y_true = make_blobs(n_samples=20_000, n_features=30, centers={centers},
                       cluster_std={std}, random_state={seed})
X = StandardScaler().fit_transform(X)
X.shape
""")

SK_PCA = D("""
pca = PCA(n_components={ncomp}, random_state=0)
Z = pca.fit_transform(X)
print("explained variance ratio:", np.round(pca.explained_variance_ratio_, 4).tolist())
print("total:", round(float(pca.explained_variance_ratio_.sum()), 4))
""")

SK_KMEANS = D("""
km = KMeans(n_clusters={k}, n_init=4, random_state=0).fit(Z)
sizes = sorted(np.bincount(km.labels_).tolist())
print("cluster sizes:", sizes)
print("inertia per sample:", round(float(km.inertia_) / len(Z), 3))
""")

SK_PLOTS = {
    "scatter": D("""
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(Z[:, 0], Z[:, 1], c=km.labels_, s=2, cmap="tab10")
        ax.set_xlabel("PC1"); ax.set_ylabel("PC2"); ax.set_title("KMeans clusters")
        plt.show()
        """),
    "bars": D("""
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(range(1, len(pca.explained_variance_ratio_) + 1), pca.explained_variance_ratio_)
        ax.set_xlabel("component"); ax.set_ylabel("explained variance ratio")
        plt.show()
        """),
    "hist": D("""
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(Z[:, 0], bins=60, color="tab:blue", alpha=0.7)
        ax.hist(Z[:, 1], bins=60, color="tab:orange", alpha=0.7)
        ax.set_title("PC1 / PC2 distributions")
        plt.show()
        """),
    "line": D("""
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(np.cumsum(pca.explained_variance_ratio_), marker="o")
        ax.axhline(0.9, color="grey", ls="--")
        ax.set_ylabel("cumulative explained variance")
        plt.show()
        """),
}

SKLEARN = {
    "sklearn_01_scatter": dict(seed=21, centers=5, std=2.0, ncomp=10, k=5, plot="scatter"),
    "sklearn_02_bars": dict(seed=22, centers=8, std=3.0, ncomp=12, k=8, plot="bars"),
    "sklearn_03_hist": dict(seed=23, centers=4, std=1.5, ncomp=8, k=4, plot="hist"),
    "sklearn_04_line": dict(seed=24, centers=6, std=2.5, ncomp=15, k=6, plot="line"),
}


def build(cells_src):
    nb = new_notebook()
    for src in cells_src:
        if src.startswith("# "):
            nb.cells.append(new_markdown_cell(src))
        else:
            nb.cells.append(new_code_cell(src))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def notebooks():
    for name, cells in LIGHT.items():
        yield name, build(cells)
    for name, (seed, cells) in PANDAS.items():
        cells = [c.replace(PANDAS_SETUP, PANDAS_SETUP.format(seed=seed)) for c in cells]
        yield name, build(cells)
    for name, p in SKLEARN.items():
        cells = [
            f"# PCA + KMeans ({p['plot']})",
            SK_SETUP.format(**p),
            SK_PCA.format(**p),
            SK_KMEANS.format(**p),
            SK_PLOTS[p["plot"]],
        ]
        yield name, build(cells)


def main(argv):
    do_exec = "--no-exec" not in argv
    args = [a for a in argv if not a.startswith("--")]
    outdir = args[0] if args else os.path.join(os.getcwd(), "suite")
    os.makedirs(outdir, exist_ok=True)
    for name, nb in notebooks():
        path = os.path.join(outdir, name + ".ipynb")
        if do_exec:
            t0 = time.perf_counter()
            NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": outdir}}
            ).execute()
            dt = time.perf_counter() - t0
            # refuse to store a reference with stderr / errors in it
            for c in nb.cells:
                for o in c.get("outputs", []):
                    if o.get("output_type") == "error" or o.get("name") == "stderr":
                        raise SystemExit(f"{name}: unexpected output {o}")
            print(f"{name:28s} executed in {dt:6.2f}s")
        nbformat.validate(nb)
        nbformat.write(nb, path)
    print("wrote", outdir)


if __name__ == "__main__":
    main(sys.argv[1:])
