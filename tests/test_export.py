"""Exports: AnnData that scanpy reads as it is, a TorchScript encoder that embeds like the
model, and `scicontrast embed --model` on new raw files through the model's own adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_dna_experiment

from scicontrast.analysis.cluster import cluster
from scicontrast.analysis.embed import embed, load_embeddings
from scicontrast.analysis.embed_files import embed_files
from scicontrast.analysis.export import EMBEDDING_KEY, export, load_torchscript, to_anndata
from scicontrast.config import validate_config
from scicontrast.data_adapters.base import Adapter, Items, PairBuilder
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model, save_model
from scicontrast.registry import ADAPTERS


@pytest.fixture(scope="module")
def trained_stand_in(tmp_path_factory) -> dict[str, Path]:
    """A small DNA experiment: FASTA files, its items, a model file (initial weights)."""
    folder = tmp_path_factory.mktemp("export")
    experiment, fasta = small_dna_experiment(folder, sequences_per_source=6)
    torch.manual_seed(0)
    typed = Experiment.from_dict(experiment)
    save_model(folder / "model.pt", build_model(typed), typed)
    embed(folder / "model.pt", folder / "items", folder / "embeddings")
    cluster(folder / "embeddings", folder / "clusters", label_column="source")
    return {
        "folder": folder,
        "fasta": fasta,
        "model": folder / "model.pt",
        "items": folder / "items",
        "embeddings": folder / "embeddings",
        "clusters": folder / "clusters",
    }


def test_anndata_holds_embedding_metadata_and_categorical_clusters(tmp_path):
    metadata = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "sample": ["x", "y", None, "x"],
            "mixed": ["t", 3, None, 4.5],  # h5ad stores one type per column
            "depth": [1.0, 2.0, 3.0, 4.0],
        }
    )
    embeddings = np.arange(12, dtype=np.float32).reshape(4, 3)
    assignments = pd.DataFrame(
        {"item_id": ["a", "b", "c", "d"], "kmeans": [1, 0, 1, 0], "hdbscan": [0, -1, 0, 2]}
    )
    to_anndata(metadata, embeddings, assignments, uns={"note": "hi"}).write_h5ad(
        tmp_path / "e.h5ad"
    )
    adata = anndata.read_h5ad(tmp_path / "e.h5ad")
    assert list(adata.obs_names) == ["a", "b", "c", "d"]
    assert adata.n_vars == 0
    np.testing.assert_array_equal(adata.obsm[EMBEDDING_KEY], embeddings)
    assert adata.obs["depth"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert adata.obs["mixed"].astype(object).tolist()[:2] == ["t", "3"]
    assert isinstance(adata.obs["kmeans"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["kmeans"].cat.categories) == ["0", "1"]
    hdbscan = adata.obs["hdbscan"]
    assert list(hdbscan.cat.categories) == ["0", "2"] and hdbscan.isna().tolist()[1]
    assert adata.uns["scicontrast"]["note"] == "hi"


def test_export_writes_h5ad_torchscript_and_model_card(trained_stand_in, tmp_path):
    card = export(
        trained_stand_in["model"],
        trained_stand_in["items"],
        trained_stand_in["embeddings"],
        tmp_path / "export",
        trained_stand_in["clusters"],
    )
    out = tmp_path / "export"
    assert sorted(p.name for p in out.iterdir()) == [
        "embeddings.h5ad",
        "encoder.onnx",
        "encoder.pt2",
        "encoder.torchscript.pt",
        "model_card.json",
    ]
    assert json.loads((out / "model_card.json").read_text()) == json.loads(json.dumps(card))
    assert card["torchscript"]["inputs"] == {"x": ["batch", "4", "40", "float32"]}

    embeddings = np.load(trained_stand_in["embeddings"] / "embeddings.npy")
    adata = anndata.read_h5ad(out / "embeddings.h5ad")
    np.testing.assert_array_equal(adata.obsm[EMBEDDING_KEY], embeddings)
    assert set(adata.obs["source"]) == {"source_0", "source_1"}
    for method in ("kmeans", "hdbscan", "leiden"):
        assert isinstance(adata.obs[method].dtype, pd.CategoricalDtype), method
    assert json.loads(adata.uns["scicontrast"]["experiment"])["name"] == "small"

    # The TorchScript encoder, loaded without the model stack, embeds one-hot windows
    # exactly as the workflow did.
    scripted, experiment = load_torchscript(out / "encoder.torchscript.pt")
    assert experiment["encoder"]["name"] == "dna_cnn"
    from scicontrast.data_adapters.dna.encoding import one_hot

    items = pd.read_parquet(trained_stand_in["items"] / "items.parquet")
    starts = zip(items["sequence"], items["window_start"], strict=True)
    windows = np.stack([one_hot(s[o : o + 40]) for s, o in starts])
    with torch.no_grad():
        again = scripted(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(again, embeddings, atol=1e-5)


def test_embed_new_files_through_the_models_adapter(trained_stand_in, tmp_path):
    """New FASTA through `scicontrast embed --model` equals the workflow's embedding."""
    new_file = tmp_path / "new_reads.fa"  # no longer matches label_from_filename
    new_file.write_text(Path(trained_stand_in["fasta"][1]).read_text())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scicontrast.cli",
            "embed",
            str(new_file),
            "--model",
            str(trained_stand_in["model"]),
            "--out",
            str(tmp_path / "new"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    new = pd.read_parquet(tmp_path / "new" / "embeddings.parquet")
    assert "source" not in new.columns  # labels describe the training files only

    workflow = pd.read_parquet(trained_stand_in["embeddings"] / "embeddings.parquet")
    workflow = workflow[workflow["source"] == "source_1"].reset_index(drop=True)
    assert list(new["item_id"]) == list(workflow["item_id"])
    np.testing.assert_array_equal(np.stack(new["embedding"]), np.stack(workflow["embedding"]))


def test_embed_new_files_needs_an_adapter_that_names_its_input(tmp_path, monkeypatch):
    class Opaque(Adapter):
        def input_files(self):
            return []

        def read(self):
            raise AssertionError("not reached")

    with pytest.raises(ConfigError, match="does not say which parameter holds its input"):
        Opaque.params_for_new_inputs({"folder": "x"}, ["y"])
    params = ADAPTERS.get("dna_fasta").params_for_new_inputs(
        {"paths": ["a.fa"], "window": 9, "labels": "t.csv", "label_from_filename": "(?P<s>a)"},
        ["b.fa"],
    )
    assert params == {"paths": ["b.fa"], "window": 9}


@pytest.mark.parametrize(
    ("adapter", "trained_with", "new_paths", "expected"),
    [
        (
            "image_folder",
            {"paths": "old/", "size": 32, "labels": "l.csv", "labels_missing": "allow"},
            ["a.png", "b.tif"],
            {"paths": ["a.png", "b.tif"], "size": 32},
        ),
        (
            "grains",
            {"segmentation": ["s1"], "size": 48},
            ["s2"],
            {"segmentation": ["s2"], "size": 48},
        ),
        (
            "planetoid",
            {"root": "cora", "name": "cora"},
            ["pubmed"],
            {"root": "pubmed", "name": "cora"},
        ),
        ("pyg_data", {"path": "g.pt"}, ["h.pt"], {"path": "h.pt"}),
        (
            "graph_table",
            {"nodes": "n.csv", "edges": "e.csv", "label_column": "y"},
            ["n2.csv", "e2.csv"],
            {"nodes": "n2.csv", "edges": "e2.csv", "label_column": "y"},
        ),
        ("networkx", {"path": "g.gml"}, ["h.gml"], {"path": "h.gml"}),
        (
            "networkx",
            {"path": "g.gml", "node_table": "n.csv"},
            ["h.gml", "m.csv"],
            {"path": "h.gml", "node_table": "m.csv"},
        ),
        (
            "audio_image",
            {"synchronization": "sync", "clip_seconds": 0.5},
            ["a.wav", "b.png"],
            {"files": ["a.wav", "b.png"], "clip_seconds": 0.5},
        ),
    ],
)
def test_every_adapter_reads_new_inputs(adapter, trained_with, new_paths, expected):
    assert ADAPTERS.get(adapter).params_for_new_inputs(trained_with, new_paths) == expected


def test_an_adapter_with_named_inputs_needs_one_path_each():
    with pytest.raises(ConfigError, match=r"reads 2 input path\(s\), nodes, edges in that order"):
        ADAPTERS.get("graph_table").params_for_new_inputs({"nodes": "n", "edges": "e"}, ["n2"])
    with pytest.raises(ConfigError, match="reads 1 input path"):
        ADAPTERS.get("planetoid").params_for_new_inputs({"root": "r"}, ["a", "b"])


def test_embed_refuses_an_items_folder_mixed_with_files(trained_stand_in, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scicontrast.cli",
            "embed",
            str(trained_stand_in["items"]),
            str(trained_stand_in["fasta"][0]),
            "--model",
            str(trained_stand_in["model"]),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "is an items folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_embed_files_bad_file_names_the_record(trained_stand_in, tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_text(">r1\n" + "ACGT" * 12 + "\n>r2\nACGTXACGT" + "A" * 40 + "\n")
    with pytest.raises(InputDataError, match="record 'r2': invalid character 'X'"):
        embed_files(trained_stand_in["model"], [bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def untrained_and_embedded(
    folder: Path, name: str, **components
) -> tuple[dict, Items, PairBuilder]:
    """An experiment of ``components`` (adapter, pairs, encoder): its items, its untrained model
    saved as ``model.pt`` and the embeddings the workflow makes; returns (experiment, items,
    pair builder)."""
    from scicontrast.analysis.diagnostics import untrained_model
    from scicontrast.registry import PAIR_BUILDERS

    experiment = validate_config({"experiments": {name: components}})["experiments"][name]
    experiment["name"] = name
    items = ADAPTERS.create(experiment["adapter"]).read()
    items.save(folder / "items")
    builder = PAIR_BUILDERS.create(experiment["pairs"])
    typed = Experiment.from_dict(experiment)
    save_model(folder / "model.pt", untrained_model(typed, builder, items), typed)
    embed(folder / "model.pt", folder / "items", folder / "embeddings")
    return experiment, items, builder


def untrained_demo_graph(folder: Path, **components) -> tuple[Path, Path, Items, PairBuilder]:
    """A two-block demo graph's tables, and its items and pair builder after
    :func:`untrained_and_embedded` with an 8-wide GCN and ``components``."""
    from scicontrast.data_adapters.graphs.demo import generate_demo_graph

    nodes, edges = generate_demo_graph(folder / "g", blocks=2, nodes_per_block=20, features=8)
    _, items, builder = untrained_and_embedded(
        folder,
        "g",
        adapter={
            "name": "graph_table",
            "params": {"nodes": str(nodes), "edges": str(edges), "label_column": "block"},
        },
        pairs={"name": "graph_views"},
        encoder={"name": "gcn", "params": {"embedding_dim": 8}},
        **components,
    )
    return nodes, edges, items, builder


def test_graph_encoder_exports_as_torchscript_on_x_and_edge_index(tmp_path):
    nodes, edges, items, builder = untrained_demo_graph(tmp_path)
    card = export(
        tmp_path / "model.pt", tmp_path / "items", tmp_path / "embeddings", tmp_path / "x"
    )
    assert card["torchscript"]["inputs"]["edge_index"] == ["2", "edges", "int64"]
    scripted, _ = load_torchscript(tmp_path / "x" / "encoder.torchscript.pt")
    data = next(iter(builder.embedding_batches(items, 1)))
    with torch.no_grad():
        again = scripted(data.x, data.edge_index).numpy()
    np.testing.assert_allclose(
        again, np.load(tmp_path / "embeddings" / "embeddings.npy"), atol=1e-5
    )

    # A new graph (here the same tables) embeds through the model's adapter as prepared.
    embed_files(tmp_path / "model.pt", [nodes, edges], tmp_path / "new")
    new_metadata, new_embeddings = load_embeddings(tmp_path / "new")
    assert new_metadata["item_id"].tolist() == items.table["item_id"].tolist()
    np.testing.assert_array_equal(new_embeddings, np.load(tmp_path / "embeddings/embeddings.npy"))

    # A graph with other node features than the training graph's is refused, naming it.
    table = pd.read_csv(nodes)
    wider = tmp_path / "wider_nodes.csv"
    table.assign(extra_feature=1.0).to_csv(wider, index=False)
    with pytest.raises(InputDataError, match=r"wider_nodes\.csv.*does not fit the model"):
        embed_files(tmp_path / "model.pt", [wider, edges], tmp_path / "wider")
    assert not (tmp_path / "wider").exists()


@pytest.mark.slow
def test_an_ensemble_of_graph_encoders_exports_its_members_side_by_side(tmp_path):
    _, _, items, builder = untrained_demo_graph(tmp_path, training={"ensemble": 2})
    embeddings = np.load(tmp_path / "embeddings" / "embeddings.npy")
    assert embeddings.shape == (40, 16)
    assert not np.allclose(embeddings[:, :8], embeddings[:, 8:])  # members differ

    card = export(
        tmp_path / "model.pt", tmp_path / "items", tmp_path / "embeddings", tmp_path / "x"
    )
    assert card["torchscript"]["output"] == ["rows", "16", "float32"]
    scripted, _ = load_torchscript(tmp_path / "x" / "encoder.torchscript.pt")
    data = next(iter(builder.embedding_batches(items, 1)))
    with torch.no_grad():
        again = scripted(data.x, data.edge_index).numpy()
    np.testing.assert_allclose(again, embeddings, atol=1e-5)


def test_new_images_embed_through_the_models_adapter(tmp_path):
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("crack_1", "crack_2", "pit_1"):
        imsave(folder / f"{name}.png", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    untrained_and_embedded(
        tmp_path,
        "img",
        adapter={
            "name": "image_folder",
            "params": {
                "paths": str(folder),
                "size": 16,
                "label_from_filename": r"(?P<defect>[a-z]+)_\d\.png$",
            },
        },
        pairs={"name": "rotations"},
        encoder={"name": "image_cnn", "params": {"embedding_dim": 6}},
    )

    renamed = tmp_path / "new.png"  # no longer matches label_from_filename
    renamed.write_bytes((folder / "pit_1.png").read_bytes())
    embed_files(tmp_path / "model.pt", [renamed], tmp_path / "new")
    new_metadata, new_embeddings = load_embeddings(tmp_path / "new")
    assert "defect" not in new_metadata.columns
    metadata, embeddings = load_embeddings(tmp_path / "embeddings")
    # One image per batch instead of three: the same numbers up to float rounding.
    np.testing.assert_allclose(
        new_embeddings, embeddings[metadata["defect"] == "pit"], rtol=1e-5, atol=1e-7
    )


def audio_image_components(folder: Path) -> dict:
    """A small synchronised audio-image demo: adapter, pairs and a small two-tower encoder."""
    from scicontrast.data_adapters.audio_image.demo import generate_demo_audio_image
    from scicontrast.data_adapters.audio_image.synchronization import synchronize

    manifest = generate_demo_audio_image(folder / "demo", events=12, classes=2, seed=3)
    synchronize([manifest], folder / "sync", truth_column="true_event")
    params = {"sample_rate": 8000, "clip_seconds": 0.25, "image_size": 16}
    return {
        "adapter": {
            "name": "audio_image",
            "params": {"synchronization": str(folder / "sync"), **params},
        },
        "pairs": {"name": "synchronized_pairs"},
        "encoder": {"name": "two_tower", "params": {"embedding_dim": 8}},
    }


def exported_inputs(domain: str, items: Items, builder: PairBuilder) -> dict[str, dict]:
    """Exported file stem -> its inputs for every item, as the model card names them."""
    if domain == "audio_image":
        return {
            "audio_encoder": {"audio": items.extras["audio"]},
            "image_encoder": {"images": items.extras["images"]},
        }
    batch = next(iter(builder.embedding_batches(items, len(items))))
    if domain == "graph":
        return {"encoder": {"x": batch.x.numpy(), "edge_index": batch.edge_index.numpy()}}
    return {"encoder": {"x": batch.numpy()}}


@pytest.mark.parametrize(
    "domain",
    [
        "dna",
        "image",
        pytest.param("graph", marks=pytest.mark.slow),
        # The fast tier checks the audio-image towers' files in test_audio_image_workflow.
        pytest.param("audio_image", marks=pytest.mark.slow),
    ],
)
def test_torch_export_and_onnx_files_embed_like_the_workflow(tmp_path, domain):
    """Each domain's encoder as .pt2 (torch.export) and .onnx (run by onnxruntime), on a batch
    of all items (not the size it was exported from), gives the workflow's embeddings."""
    import onnxruntime

    if domain == "dna":
        experiment, _ = small_dna_experiment(tmp_path / "dna", sequences_per_source=4)
        components = {k: experiment[k] for k in ("adapter", "pairs", "encoder")}
    elif domain == "image":
        from skimage.io import imsave

        (tmp_path / "images").mkdir()
        rng = np.random.default_rng(0)
        for k in range(7):
            imsave(tmp_path / f"images/i{k}.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
        components = {
            "adapter": {
                "name": "image_folder",
                "params": {"paths": str(tmp_path / "images"), "size": 16},
            },
            "pairs": {"name": "rotations"},
            "encoder": {"name": "image_cnn", "params": {"channels": [4, 8], "embedding_dim": 6}},
        }
    elif domain == "audio_image":
        components = audio_image_components(tmp_path)
    if domain == "graph":
        _, _, items, builder = untrained_demo_graph(tmp_path)
    else:
        _, items, builder = untrained_and_embedded(tmp_path, domain, **components)
    metadata, embeddings = load_embeddings(tmp_path / "embeddings")
    card = export(
        tmp_path / "model.pt", tmp_path / "items", tmp_path / "embeddings", tmp_path / "x"
    )
    inputs = exported_inputs(domain, items, builder)
    assert set(card["torch_export"]["files"]) == set(card["onnx"]["files"]) == set(inputs)
    for stem, arrays in inputs.items():
        rows = slice(None)
        if domain == "audio_image":
            rows = (
                metadata["modality"] == ("audio" if stem == "audio_encoder" else "image")
            ).to_numpy()
        program = torch.export.load(tmp_path / "x" / card["torch_export"]["files"][stem]).module()
        with torch.no_grad():
            from_program = program(*(torch.from_numpy(a) for a in arrays.values())).numpy()
        session = onnxruntime.InferenceSession(str(tmp_path / "x" / card["onnx"]["files"][stem]))
        (from_onnx,) = session.run(None, arrays)
        np.testing.assert_allclose(from_program, embeddings[rows], atol=1e-5)
        np.testing.assert_allclose(from_onnx, embeddings[rows], atol=1e-4)
    assert card["onnx"]["max_abs_difference_to_eager"] <= 1e-4
