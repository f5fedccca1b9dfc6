"""`medge matrix run --engine ray` on a real two-node Ray cluster: a device-bound cell runs only on the node
that declares the device resource, and the table says on which node each cell ran."""

from __future__ import annotations

import json

import pytest
from scale_checks import medge, rows, write_matrix

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture
def two_node_cluster():
    """A head node (1 CPU) and a 'Jetson' node (1 CPU + the jetson-orin-nano resource)."""
    cluster = ray_cluster_utils.Cluster(initialize_head=True,
                                        head_node_args={"num_cpus": 1, "include_dashboard": False})
    device = cluster.add_node(num_cpus=1, resources={"jetson-orin-nano": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster, device.node_id
    finally:
        cluster.shutdown()


def test_device_bound_cell_runs_on_the_node_with_the_resource(tmp_path, two_node_cluster, fast_yaml):
    cluster, device_node = two_node_cluster
    matrix = write_matrix(tmp_path / "m.yaml", f"""
models: [us-dct-vit]
targets: [local, jetson-orin-nano]
precisions: [fp16, fp32]
exclude: [{{target: local, precision: fp16}}, {{target: jetson-orin-nano, precision: fp32}}]
{fast_yaml}""")
    result = medge("matrix", "run", str(matrix), "-o", "out", "--engine", "ray", "--address", cluster.address, "--json",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    final = {r["cell"]: r for r in json.loads(result.stdout)["rows"]}
    jetson = final["us-dct-vit__jetson-orin-nano__fp16"]
    assert jetson["status"] == "ok" and jetson["node"] == device_node[:12]
    assert final["us-dct-vit__local__fp32"]["status"] == "ok"
    assert device_node[:12] in (tmp_path / "out/results.md").read_text()  # the table says where it ran
    assert [r["engine"] for r in rows(tmp_path / "out")] == ["ray", "ray"]
