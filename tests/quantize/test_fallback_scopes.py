"""The gate's last fallback stage moves whole modules (ONNX name scopes) to FP32."""

from __future__ import annotations

from medge.quantize.fallback_scopes import module_scopes, scope_nodes

NAMES = ["/stem/Conv", "/blk/proj/MatMul", "/blk/Mul", "/blk/Add", "/blk/norm/LayerNormalization",
         "/head/Conv", "/head/Sigmoid", "/Concat"]


def test_the_module_of_the_worst_group_comes_first_taken_whole():
    ranked = [{"nodes": ["/blk/proj/MatMul", "/blk/Mul"]}, {"nodes": ["/head/Conv"]}, {"nodes": ["/Concat"]}]
    scopes = module_scopes(NAMES, ranked)
    assert scopes == ["/blk/", "/head/"]  # /blk/proj/ is inside /blk/; a root node has no module
    assert scope_nodes(scopes[:1], NAMES) == ["/blk/proj/MatMul", "/blk/Mul", "/blk/Add", "/blk/norm/LayerNormalization"]


def test_a_scope_that_wraps_most_of_the_network_is_split_into_its_children():
    names = ["/features/a/Conv", "/features/a/Relu", "/features/b/Conv", "/features/b/Relu", "/classifier/Gemm"]
    assert module_scopes(names, [{"nodes": ["/features/b/Conv"]}]) == ["/features/b/"]
