"""MSN: loss identities, bad input, the model's gradients, EMA and token drop, and the multi-process reductions."""
import math, os, socket
import pytest, torch
import torch.nn.functional as F
from masklab.msn import (MSNProjectionHead, init_prototypes, prototype_scores, sharpen, sinkhorn, me_max, msn_loss,
                         msn_targets, ema_momentum, ema_update, MSN, render_prototypes, render_sharpening,
                         SharpeningExplorer, effective_rank)
from masklab.encoders import create_encoder


def gen(seed=0): return torch.Generator().manual_seed(seed)


def test_head_is_official_size():
    head = MSNProjectionHead(384)
    assert sum(p.numel() for p in head.parameters()) == 5_517_568
    assert [type(m).__name__ for m in head] == ['Linear', 'BatchNorm1d', 'GELU'] * 2 + ['Linear']
    assert all(m.bias is not None for m in head if isinstance(m, torch.nn.Linear))


def test_prototype_init_bounds():
    P = init_prototypes(1024, 256, generator=gen())
    assert P.shape == (1024, 256) and P.requires_grad and P.abs().max() <= 1 / 16


@pytest.mark.parametrize('tau,T', [(0.1, 0.25), (0.05, 0.5), (1.0, 0.1)])
def test_sharpen_identity(tau, T):
    s = torch.rand(8, 32, generator=gen()) * 2 - 1
    torch.testing.assert_close(sharpen(torch.softmax(s / tau, 1), T), torch.softmax(s / (tau * T), 1), atol=1e-5, rtol=1e-4)


def test_sharpen_small_T_does_not_underflow():
    p = torch.softmax(torch.randn(4, 1024, generator=gen()) * 10, 1)
    out = sharpen(p, 0.01)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(1), torch.ones(4))


def test_sinkhorn_marginals():
    p = torch.softmax(torch.randn(64, 16, generator=gen()) * 3, 1)
    q = sinkhorn(p, 3)
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    assert (q.sum(0) - 4).abs().max() < (p.sum(0) - 4).abs().max()
    torch.testing.assert_close(sinkhorn(p, 500).sum(0), torch.full((16,), 4.0), atol=1e-3, rtol=0)


def test_uniform_predictions_give_log_k_and_zero_me_max():
    P = init_prototypes(32, 16, generator=gen())
    out = msn_loss(torch.zeros(24, 16), torch.randn(8, 16, generator=gen(1)), P)
    assert out['ce'].item() == pytest.approx(math.log(32), abs=1e-5)
    assert out['me_max'].item() == pytest.approx(0, abs=1e-6)


def test_me_max_of_one_hot_mean_is_log_k():
    assert me_max(F.one_hot(torch.zeros(10, dtype=torch.long), 8).float()).item() == pytest.approx(math.log(8), abs=1e-5)


def test_targets_repeat_view_major_and_carry_no_gradient():
    P = init_prototypes(16, 8, generator=gen())
    h = torch.randn(4, 8, generator=gen(1), requires_grad=True)
    z = torch.randn(12, 8, generator=gen(2), requires_grad=True)
    out = msn_loss(z, h, P, use_sinkhorn=False)
    t = msn_targets(h, P, use_sinkhorn=False)
    logp = torch.log_softmax(prototype_scores(z, P) / 0.1, 1)
    expected = -(torch.cat([t, t, t]) * logp).sum(1).mean()
    torch.testing.assert_close(out['ce'], expected)
    out['loss'].backward()
    assert h.grad is None and P.grad is not None and z.grad is not None


@pytest.mark.parametrize('args,kw,msg', [
    ((torch.randn(16, 8), torch.randn(8, 4)), {}, 'target has D=4'),
    ((torch.randn(15, 8), torch.randn(8, 8)), {}, 'anchor has 15 rows, not a whole number of views'),
    ((torch.randn(16, 8), torch.randn(8, 8)), dict(tau=0.0), 'tau must be > 0'),
    ((torch.randn(16, 8), torch.randn(8, 8)), dict(T=-1.0), 'T must be > 0'),
])
def test_bad_input(args, kw, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(')):
        msn_loss(*args, torch.randn(10, 8), **kw)


def test_one_prototype_is_refused():
    with pytest.raises(ValueError, match='K >= 2'): msn_loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match='num_prototypes must be >= 2'): init_prototypes(1)


def test_momentum_schedule():
    assert ema_momentum(0, 100) == 0.996
    assert ema_momentum(100, 100) == pytest.approx(0.996 + 0.004 / 1.25)
    assert ema_momentum(10_000, 100) == 1.0


def test_ema_update_maths():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in a.parameters()]
    ema_update(a, b, 0.75)
    for p0, pa, pb in zip(before, a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, 0.75 * p0 + 0.25 * pb.detach())


def _batch(B=4, focal=3):
    return dict(target=torch.randn(B, 3, 32, 32), anchors=[torch.randn(B, 3, 32, 32), torch.randn(focal * B, 3, 16, 16)])


def _model(**kw):
    torch.manual_seed(0)
    return MSN(create_encoder('msn_vit_tiny'), hidden_dim=64, out_dim=16, num_prototypes=8, patch_drop=0.5, **kw)


def test_model_gradients_and_stats():
    m = _model()
    out = m(_batch())
    assert {'loss', 'ce', 'me_max', 'ent', 'n_protos', 'max_target'} <= set(out)
    assert 1 <= out['n_protos'].item() <= 4 and 0 < out['max_target'].item() <= 1
    out['loss'].backward()
    assert m.prototypes.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.target_encoder.parameters())


def test_token_drop_only_on_random_anchors():
    m = _model()
    seen = []
    hooks = [e.backbone.blocks[0].register_forward_hook(lambda mod, i, o: seen.append(o.shape[:2]))
             for e in (m.encoder, m.target_encoder)]
    m(_batch())
    for h in hooks: h.remove()
    assert seen == [(4, 1 + 8), (12, 1 + 4), (4, 1 + 16)]  # 32 px: 16 patches, half dropped; 16 px focal: all 4


def test_per_sample_masks_differ():
    m = _model(shared_mask=False)
    idx = []
    orig = m.encoder.backbone.forward_features
    def spy(x, patch_drop=0.0, keep_idx=None, shared=True, generator=None, norm=True):
        idx.append(shared)
        return orig(x, patch_drop, keep_idx, shared, generator, norm)
    m.encoder.backbone.forward_features = spy
    m(_batch())
    assert idx and not any(idx)


def test_on_step_end_moves_target():
    m = _model()
    with torch.no_grad():
        for p in m.encoder.parameters(): p.add_(1.0)
    t0 = [p.detach().clone() for p in m.target_encoder.parameters()]
    assert m.on_step_end(0, 10) == 0.996
    for a, b, o in zip(t0, m.target_encoder.parameters(), m.encoder.parameters()):
        torch.testing.assert_close(b, 0.996 * a + 0.004 * o.detach())


def test_param_groups_and_no_weight_decay():
    m = _model()
    nwd = m.no_weight_decay()
    assert 'prototypes' in nwd and not any(n.startswith('target_encoder') for n in nwd)
    groups = m.param_groups(0.04)
    assert [g['weight_decay'] for g in groups] == [0.04, 0.0, 0.0]
    assert sum(len(g['params']) for g in groups) == sum(p.requires_grad for p in m.parameters())


def test_model_refuses_bad_batches():
    m = _model()
    with pytest.raises(ValueError, match='not a whole number of views'):
        m(dict(target=torch.randn(4, 3, 32, 32), anchors=[torch.randn(6, 3, 32, 32)]))
    with pytest.raises(TypeError, match="batch must be a dict"): m(torch.randn(4, 3, 32, 32))


def test_renderers_return_figures_and_explorer_reacts():
    x, s = torch.randn(6, 3, 32, 32), torch.rand(6, 8) * 2 - 1
    fig = render_prototypes(x, s, s, proto=2, image=1, k=4)
    assert len(fig.axes) == 6
    ex = SharpeningExplorer(x, s)
    ex.T.value = 1.0
    assert ex.result.axes[1].get_title().startswith('H(prediction)')
    with pytest.raises(ValueError, match='tau must be > 0'): render_sharpening(x, s, tau=0)


def test_effective_rank_bounds():
    assert effective_rank(torch.randn(200, 1) @ torch.randn(1, 6)) == pytest.approx(1, abs=1e-3)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, out_dir):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        p = torch.softmax(torch.randn(8 * world, 6, generator=gen(3)) * 3, 1)
        mine = p[rank * 8:(rank + 1) * 8]
        torch.save(dict(t=sinkhorn(mine, 3), m=me_max(mine)), os.path.join(out_dir, f'{rank}.pt'))
    finally:
        dist.destroy_process_group()


def test_sinkhorn_and_me_max_reduce_over_processes(tmp_path):
    "Two gloo processes, each with half the batch, give the same targets and ME-MAX as one process with all of it"
    import torch.multiprocessing as mp
    mp.start_processes(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method='spawn')
    got = [torch.load(tmp_path / f'{r}.pt') for r in range(2)]
    p = torch.softmax(torch.randn(16, 6, generator=gen(3)) * 3, 1)
    torch.testing.assert_close(torch.cat([got[0]['t'], got[1]['t']]), sinkhorn(p, 3))
    for g in got: assert g['m'].item() == pytest.approx(me_max(p).item(), abs=1e-6)


def _tiny_msn(K=16):
    torch.manual_seed(0)
    return MSN(create_encoder('msn_vit_tiny', img_size=32), hidden_dim=32, out_dim=16, num_prototypes=K)


def test_loss_and_targets_are_fp32_under_bf16_autocast():
    "MSN's similarities, softmaxes, sharpening and Sinkhorn run in fp32 inside a bf16 step (official: fp32)"
    g = gen(3)
    anchor, target, P = torch.randn(3 * 32, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(256, 64, generator=g)
    ref = msn_loss(anchor, target, P)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = msn_loss(anchor, target, P)
    assert got['loss'].dtype == torch.float32 and got['targets'].dtype == torch.float32
    assert torch.equal(got['targets'], ref['targets']) and torch.equal(got['loss'], ref['loss'])
    # bf16 inputs (what an autocast encoder hands over) are promoted, not computed in bf16
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = msn_loss(anchor.bfloat16(), target.bfloat16(), P)
    torch.testing.assert_close(low['loss'], msn_loss(anchor.bfloat16().float(), target.bfloat16().float(), P)['loss'])


def test_head_init_is_official():
    head = MSNProjectionHead(384)
    for fc in (head.fc1, head.fc2, head.fc3):
        assert torch.count_nonzero(fc.bias) == 0
        assert abs(fc.weight.std().item() - 0.02) < 0.002 and abs(fc.weight.mean().item()) < 0.002  # default Linear: std 0.03 at 384 in


def test_features_are_the_target_cls_before_the_final_norm():
    model = _tiny_msn()
    with torch.no_grad(): model.target_encoder.backbone.norm.weight.mul_(3.0)  # the final norm must not matter
    x = torch.randn(4, 3, 32, 32, generator=gen())
    f = model.features(x)
    ref = model.target_encoder.backbone.forward_features(x, norm=False)[:, 0]
    torch.testing.assert_close(f, ref)
    with torch.no_grad(): model.encoder.backbone.cls_token.add_(1.0)  # the online encoder is not what is read
    torch.testing.assert_close(model.features(x), ref)


def test_on_step_end_takes_the_trainers_momentum():
    model = _tiny_msn()
    before = [p.clone() for p in model.target_encoder.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters(): p.add_(1.0)
    assert model.on_step_end(0, 10, momentum=0.5) == 0.5
    for b, t, o in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(t, 0.5 * b + 0.5 * o)


def test_end_of_run_helpers_follow_the_models_device():
    "A model on another device (meta stands in for CUDA): the inputs move to it; only copying meta data back fails"
    from masklab.msn import scores_of
    model = _tiny_msn().to('meta')
    x = torch.randn(4, 3, 32, 32)  # built on the CPU, as run_figures builds them
    with pytest.raises(NotImplementedError, match='meta'):  # before: a device-mismatch RuntimeError in the forward
        scores_of(model, x)


def test_sharpening_explorer_readable_and_says_what_it_is():
    "issue 19: titles at >= 9 pt, a plain-text line instead of the raw interactive(...) repr, checks in one helper"
    x, s = torch.randn(6, 3, 32, 32), torch.rand(6, 8) * 2 - 1
    ex = SharpeningExplorer(x, s)
    assert all(ax.title.get_fontsize() >= 9 for ax in ex.result.axes)
    assert ex._repr_mimebundle_()['text/plain'] == '[SharpeningExplorer: a live widget; run the notebook to use its controls]'
    with pytest.raises(ValueError, match=r'images must be \(N, 3, H, W\)'): render_sharpening(x[0], s)
    with pytest.raises(ValueError, match='T must be > 0, got -1'): render_sharpening(x, s, T=-1)
    with pytest.raises(ValueError, match='image must be <= 5'): render_sharpening(x, s, image=6)


def test_msn_loss_equals_the_plain_torch_loss():
    "The lesson's minimal version: sharpen by a power, 3 Sinkhorn iterations, CE per view, ME-MAX as log K - H(p_bar)"
    import math
    g = torch.Generator().manual_seed(1)
    z, h, P = torch.randn(3 * 8, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(12, 16, generator=g)
    Pn = F.normalize(P, dim=1)
    p = torch.softmax(F.normalize(z, dim=1) @ Pn.T / 0.1, dim=1)
    t = torch.softmax(F.normalize(h, dim=1) @ Pn.T / 0.1, dim=1) ** 4
    Q = (t / t.sum(1, keepdim=True)).T
    Q = Q / Q.sum()
    for _ in range(3):
        Q = Q / Q.sum(1, keepdim=True) / 12
        Q = Q / Q.sum(0, keepdim=True) / 8
    t = (Q * 8).T
    ce = -(t.repeat(3, 1) * p.log()).sum(1).mean()
    pb = p.mean(0)
    mm = (pb * pb.log()).sum() + math.log(12)
    out = msn_loss(z, h, P)
    assert out['ce'].item() == pytest.approx(ce.item(), abs=1e-5)
    assert out['me_max'].item() == pytest.approx(mm.item(), abs=1e-6)
    assert out['loss'].item() == pytest.approx((ce + mm).item(), abs=1e-5)


def test_prototype_explorer_readable_and_legend_clear_of_the_bars():
    "issue 19: titles at >= 9 pt, a legend that covers no bar, a plain-text line for the docs"
    from masklab.msn import render_prototypes, PrototypeExplorer
    g = torch.Generator().manual_seed(0)
    x, ts, as_ = torch.randn(10, 3, 32, 32, generator=g), torch.rand(10, 16, generator=g) * 2 - 1, torch.rand(10, 16, generator=g) * 2 - 1
    fig = render_prototypes(x, ts, as_, proto=3, image=2)
    assert all(ax.title.get_fontsize() >= 9 for ax in fig.axes)
    bars = fig.axes[-1]
    fig.canvas.draw()
    leg = bars.get_legend().get_window_extent()
    assert not any(leg.overlaps(b.get_window_extent()) for b in bars.patches if b.get_height() > 0)
    ex = PrototypeExplorer(_tiny_msn(), torch.randn(6, 3, 32, 32), k=4)
    assert ex._repr_mimebundle_()['text/plain'] == '[PrototypeExplorer: a live widget; run the notebook to use its controls]'
    with pytest.raises(ValueError, match='k must be <= 6'): PrototypeExplorer(_tiny_msn(), torch.randn(6, 3, 32, 32), k=7)


def test_head_and_loss_equal_the_plain_torch_versions():
    "The lesson's minimal version: Linear-BN-GELU x2 + Linear, and CE against softmax(cos / (tau T)) + ME-MAX, no Sinkhorn"
    import math
    torch.manual_seed(0)
    head = MSNProjectionHead(16, 32, 8)
    mh = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.GELU(), torch.nn.Linear(32, 32),
                             torch.nn.BatchNorm1d(32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    mh.load_state_dict(dict(zip(mh.state_dict(), head.state_dict().values())))
    f = torch.randn(6, 16)
    torch.testing.assert_close(head(f), mh(f))
    z, h, P = torch.randn(12, 8), torch.randn(6, 8), torch.randn(10, 8)
    q = F.normalize(P, dim=1)
    p = torch.softmax(F.normalize(z, dim=1) @ q.T / 0.1, dim=1)
    t = torch.softmax(F.normalize(h, dim=1) @ q.T / 0.025, dim=1)
    ce = -(t.repeat(2, 1) * p.log()).sum(1).mean()
    mm = (p.mean(0) * p.mean(0).log()).sum() + math.log(10)
    out = msn_loss(z, h, P, use_sinkhorn=False)
    assert out['loss'].item() == pytest.approx((ce + mm).item(), abs=1e-5)
    with pytest.raises(ValueError, match="x has D=12 but the head's in_dim=16"): head(torch.randn(4, 12))
    with pytest.raises(TypeError, match='x must be a torch.Tensor'): head([1.0] * 16)
