"""`antlr-snn landscape` (Sec. 3.4, Fig. 5)."""
import argparse
import json

import numpy as np
import pytest

from antlr_snn import cli
from antlr_snn.experiments import landscape as ls


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pca_directions_recover_the_dominant_plane():
    rng = np.random.default_rng(0)
    P = 40
    e0, e1 = np.zeros(P), np.zeros(P)
    e0[3], e1[7] = 1.0, 1.0
    g = (rng.normal(size=(200, 1)) * 5 * e0 + rng.normal(size=(200, 1)) * 2 * e1
         + 0.01 * rng.normal(size=(200, P)) + 3.0)  # the mean is removed first
    d, explained = ls.pca_directions(g)
    assert d.shape == (2, P)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-12)
    assert abs(d[0] @ e0) > 0.999 and abs(d[1] @ e1) > 0.999
    assert d[0, 3] > 0 and d[1, 7] > 0  # sign convention
    assert explained[0] > explained[1] > 0 and sum(explained) <= 1.0
    with pytest.raises(ValueError):
        ls.pca_directions(g[:2])


def test_g2s_reconstruction_of_a_known_surface_and_inputs_untouched():
    a = np.linspace(-1, 1, 21)
    A, B = np.meshgrid(a, a)  # rows: dim 1, columns: dim 0
    z = A ** 2 + 0.5 * np.sin(3 * B) + A * B
    gx, gy = 2 * A + B, 1.5 * np.cos(3 * B) + A
    gx0, gy0 = gx.copy(), gy.copy()
    rec = ls.reconstruct(a, gx, gy)
    np.testing.assert_array_equal(gx, gx0)
    np.testing.assert_array_equal(gy, gy0)
    assert rec[10, 10] == 0.0
    assert ls.pearson(rec, z) > 0.999
    # swapping the two components gives a different (wrong) surface
    assert ls.pearson(ls.reconstruct(a, gy, gx), z) < 0.99


def test_pearson_and_regions():
    x = np.arange(9.0).reshape(3, 3)
    assert ls.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert ls.pearson(x, -x) == pytest.approx(-1.0)
    assert ls.pearson(x, np.ones_like(x)) is None          # constant surface
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = True
    assert ls.pearson(x, x, mask) is None                  # too few points
    same = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0]], bool)
    comp = ls.centre_component(same)
    assert comp.tolist() == [[False, False, True], [False, True, True], [False, False, False]]
    assert not ls.centre_component(~same).any()


def _parse(argv):
    p = argparse.ArgumentParser()
    ls.add_arguments(p)
    return p.parse_args(argv)


def test_end_to_end_small_grid(tmp_path):
    out = tmp_path / "land"
    args = _parse(["--grid", "7", "--seed", "0", "--quiet", "--out", str(out)])
    assert ls.run(args) == 0
    for name in ("landscape.png", "landscape.npz", "results.json"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    g = res["grid"]
    # Sec. 3.4 with the experiment's defaults: ANTLR reached exactly zero loss on pattern 0
    assert res["training"]["attempts"] == [{"trial": 0, "final_loss": 0.0,
                                            "iterations": res["training"]["iterations_to_zero"]}]
    assert 0 < res["training"]["iterations_to_zero"] < 5000
    assert g["true_loss_at_centre"] == 0.0 and g["true_loss_max"] > 0
    assert res["config"]["sizes"] == [10, 50, 50, 1]
    assert res["training"]["parameters"] == 10 * 50 + 50 + 50 * 50 + 50 + 50 + 1
    assert 0 < g["region_fraction"] < 1 and g["span"] > 0
    assert res["finite_difference_check"]["pearson_grid"] > 0.95
    z = np.load(out / "landscape.npz")
    for m in ("activation", "timing", "antlr"):  # the reported r is that of the saved surfaces
        r = res["methods"][m]["pearson_grid"]
        expected = np.corrcoef(z[f"{m}_surface"].ravel(), z["true_loss"].ravel())[0, 1]
        assert r == pytest.approx(float(expected), abs=1e-9)
        rr = res["methods"][m]["pearson_region"]
        mask = z["region"].astype(bool)
        if rr is not None:
            assert rr == pytest.approx(float(np.corrcoef(z[f"{m}_surface"][mask],
                                                         z["true_loss"][mask])[0, 1]), abs=1e-9)
    assert z["true_loss"].shape == (7, 7) and z["true_loss"][3, 3] == 0.0
    assert z["region"][3, 3] and z["changed_neurons"][3, 3] == 0
    for m in ("activation", "timing", "antlr"):
        assert z[f"{m}_surface"].shape == (7, 7) and z[f"{m}_surface"][3, 3] == 0.0
        assert np.isfinite(z[f"{m}_grad_dim0"]).all()
    np.testing.assert_allclose(np.linalg.norm(z["directions"], axis=1), 1.0, rtol=1e-5)


def test_the_grid_gradients_are_each_replicas_own(tmp_path):
    """A grid point evaluated inside a batch gives the same loss and gradient as alone."""
    from antlr_snn.experiments import spike_train as st
    cfg = st.TaskConfig(outputs=1, num_steps=40)
    problem = st.make_problem(cfg, [0])
    theta = np.concatenate([np.concatenate([w[0].reshape(-1), b[0].reshape(-1)])
                            for w, b in problem.init]).astype(np.float64)
    shapes = [s for w, b in problem.init for s in (tuple(w.shape[1:]), tuple(b.shape[1:]))]
    rng = np.random.default_rng(1)
    d = rng.normal(size=(2, theta.size))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    coords = rng.normal(size=(5, 2))
    batch = ls.evaluate_grid(cfg, problem, theta, d, coords, "antlr", shapes)
    alone = ls.evaluate_grid(cfg, problem, theta, d, coords[3:4], "antlr", shapes)
    np.testing.assert_allclose(batch["loss"][3:4], alone["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch["grad"][3:4], alone["grad"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [["--grid", "6"], ["--span", "-1"], ["--span", "wide"],
                                 ["--region-fraction", "1.5"], ["--max-iterations", "0"]])
def test_user_errors_are_one_line(bad, tmp_path, capsys):
    assert cli.main(["landscape", *bad, "--quiet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("antlr-snn landscape: error:")
