"""RTFormer network: official sizes, shapes for any input, clear errors, ablations."""

import pytest
import torch
import torch.nn.functional as F

from engine.model.rtformer import (
    ATTENTION_KINDS,
    MIN_INPUT_SIZE,
    CrossResolutionAttention,
    build_model,
    count_parameters,
    masked_adaptive_max_pool,
    variant_config,
)
from tests.synthetic import calibrated_model


@pytest.mark.parametrize(
    ("variant", "aux_head", "expected"),
    [
        ("slim", True, 5_403_398),
        ("slim", False, 5_365_043),
        ("base", True, 17_916_390),
        ("base", False, 17_765_971),
    ],
)
def test_parameter_counts_match_the_official_model(variant, aux_head, expected):
    model = build_model(variant, num_classes=19, use_aux_head=aux_head)
    assert count_parameters(model) == expected


def test_variant_configs_follow_the_official_ones():
    slim, base = variant_config("slim"), variant_config("base")
    assert (slim.base_channels, slim.head_channels, slim.use_injection) == (32, 64, (True, True))
    assert (base.base_channels, base.head_channels, base.use_injection) == (64, 128, (True, False))
    ade_slim = variant_config("slim", "ade20k")
    assert (ade_slim.cross_size, ade_slim.use_injection, ade_slim.drop_path_rate) == (8, (True, False), 0.1)
    with pytest.raises(ValueError, match="unknown RTFormer variant"):
        variant_config("huge")


@pytest.fixture(scope="module")
def slim():
    return calibrated_model("slim", num_classes=11)


@pytest.mark.parametrize(
    ("batch", "height", "width"), [(1, 64, 64), (3, 100, 130), (2, 360, 480), (1, 97, 211)]
)
def test_logits_come_at_the_input_size(slim, batch, height, width):
    with torch.inference_mode():
        logits = slim(torch.randn(batch, 3, height, width))
    assert logits.shape == (batch, 11, height, width)
    assert torch.isfinite(logits).all()


def test_each_sample_is_independent_of_the_rest_of_the_batch(slim):
    images = torch.randn(3, 3, 96, 128)
    with torch.inference_mode():
        together = slim(images)
        alone = torch.cat([slim(image[None]) for image in images])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 128, 128), "expects 3 input channels, got 1"),
        ((1, 4, 128, 128), "expects 3 input channels, got 4"),
        ((3, 128, 128), "4-D batch"),
        ((1, 3, 32, 128), "too small"),
        ((1, 3, 128, MIN_INPUT_SIZE - 1), "too small"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(slim, shape, message):
    with pytest.raises(ValueError, match=message):
        slim(torch.randn(*shape))


def test_training_returns_main_and_aux_logits_and_backpropagates():
    torch.manual_seed(0)
    model = build_model("slim", num_classes=5, drop_path_rate=0.5).train()
    images = torch.randn(2, 3, 96, 160)
    labels = torch.randint(0, 5, (2, 96, 160))
    logits, aux_logits = model(images)
    assert logits.shape == aux_logits.shape == (2, 5, 96, 160)
    loss = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux_logits, labels)
    loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_base_runs_on_an_odd_size():
    model = build_model("base", num_classes=3).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 72, 136)).shape == (1, 3, 72, 136)


ABLATIONS = [(kind, 0.25) for kind in ATTENTION_KINDS if kind != "mhea"]
ABLATIONS += [("mhea", ratio) for ratio in (0.125, 0.25, 1.0)]


@pytest.mark.parametrize(("attention", "ratio"), ABLATIONS)
def test_ablation_attentions_train_and_infer(attention, ratio):
    torch.manual_seed(0)
    model = build_model("slim", num_classes=4, attention=attention, mhea_ratio=ratio).train()
    images = torch.randn(2, 3, 96, 128)
    labels = torch.randint(0, 4, (2, 96, 128))
    logits, aux_logits = model(images)
    (F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux_logits, labels)).backward()
    attention_grads = [p.grad for name, p in model.named_parameters() if ".low_attention." in name]
    assert attention_grads and all(g is not None and torch.isfinite(g).all() for g in attention_grads)
    assert any(g.abs().sum() > 0 for g in attention_grads)
    model.eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 100, 140)).shape == (1, 4, 100, 140)


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="unknown attention"):
        build_model("slim", attention="performer")


@pytest.mark.parametrize(
    ("height", "width", "size"), [(12, 15, 12), (3, 5, 2), (2, 2, 12), (24, 24, 12), (7, 31, 8)]
)
def test_adaptive_max_pool_matches_torch_for_any_size(height, width, size):
    x = torch.randn(2, 5, height, width)
    torch.testing.assert_close(masked_adaptive_max_pool(x, size), F.adaptive_max_pool2d(x, size))


def test_cross_resolution_attention_is_the_official_formula():
    torch.manual_seed(0)
    attention = CrossResolutionAttention(8).eval()
    x, key, value = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 9), torch.randn(2, 8, 9)
    out = attention(x, key, value)
    query = attention.norm(x)
    for n in range(2):
        logits = torch.einsum("chw,ct->thw", query[n], key[n]) / 3.0  # (9 tokens) ** -0.5
        expected = torch.einsum("thw,ct->chw", logits.softmax(0), value[n])
        torch.testing.assert_close(out[n], expected, atol=1e-5, rtol=1e-5)


def test_parameter_groups_put_dappm_and_heads_at_ten_times_the_rate():
    model = build_model("slim", num_classes=5)
    regular, fast = model.parameter_groups(10.0)
    assert fast["lr_multiplier"] == 10.0 and regular["lr_multiplier"] == 1.0
    fast_ids = {id(p) for p in fast["params"]}
    expected = {
        id(p) for name, p in model.named_parameters() if name.split(".")[0] in {"dappm", "head", "aux_head"}
    }
    assert fast_ids == expected
    assert len(regular["params"]) + len(fast["params"]) == len(list(model.parameters()))
