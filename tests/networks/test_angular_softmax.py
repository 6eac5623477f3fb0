"""A-Softmax: psi(theta), the loss against a slow evaluation of eq. (4), the lambda schedule, gradients, MONAI."""

from __future__ import annotations

import math

import pytest
import torch

from naslung.networks import (
    AngularLinear,
    AngularSoftmaxLoss,
    CBAMResNet3D,
    LambdaSchedule,
    SoftmaxCrossEntropyLoss,
    angular_margin_psi,
    build_loss,
    logits_from_output,
)
from naslung.pipeline.errors import ConfigError


def slow_psi(theta: float, m: int) -> float:
    k = min(math.floor(m * theta / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def slow_a_softmax(x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, m: int, lam: float) -> float:
    """Eq. (4) with SphereFace's annealed target logit, one sample and one class at a time."""
    total = 0.0
    for i in range(x.shape[0]):
        xi = [float(v) for v in x[i]]
        x_norm = math.sqrt(sum(v * v for v in xi))
        logits = []
        for j in range(weight.shape[0]):
            wj = [float(v) for v in weight[j]]
            cos_theta = sum(a * b for a, b in zip(xi, wj, strict=True)) / (x_norm * math.sqrt(sum(v * v for v in wj)))
            theta = math.acos(max(-1.0, min(1.0, cos_theta)))
            if j == int(labels[i]):
                logits.append((lam * x_norm * math.cos(theta) + x_norm * slow_psi(theta, m)) / (1 + lam))
            else:
                logits.append(x_norm * math.cos(theta))
        total += -logits[int(labels[i])] + math.log(sum(math.exp(f) for f in logits))
    return total / x.shape[0]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_matches_its_definition_and_decreases(m):
    theta = torch.linspace(0, math.pi, 181, dtype=torch.float64)
    psi = angular_margin_psi(torch.cos(theta), m)
    expected = torch.tensor([slow_psi(float(t), m) for t in theta], dtype=torch.float64)
    torch.testing.assert_close(psi, expected, atol=1e-9, rtol=0)
    assert bool((psi[1:] <= psi[:-1] + 1e-12).all())
    assert psi[0] == pytest.approx(1.0) and psi[-1] == pytest.approx(1.0 - 2 * m)


LOSS_CASES = [  # margin, lambda schedule, iteration, number of classes
    [4, LambdaSchedule(0.0, 0.0), 0, 2],  # eq. (4) exactly
    [4, LambdaSchedule(), 0, 2],  # lambda = 1500
    [4, LambdaSchedule(), 100, 3],  # lambda = 1500 / 11
    [3, LambdaSchedule(10.0, 1.0, 1.0), 5, 2],
    [2, LambdaSchedule(0.0, 0.0), 0, 4],
    [1, LambdaSchedule(0.0, 0.0), 0, 2],  # m = 1 is plain normalised-weight softmax
]


@pytest.mark.parametrize("m, schedule, iteration, classes", LOSS_CASES)
def test_loss_matches_slow_formula(m, schedule, iteration, classes):
    generator = torch.Generator().manual_seed(m + classes)
    head = AngularLinear(5, classes, margin=m).double().train()
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (7,), generator=generator)
    loss_fn = AngularSoftmaxLoss(schedule.lambda_max, schedule.lambda_min, schedule.gamma, schedule.power)
    loss_fn.iteration.fill_(iteration)
    lam = schedule(iteration)
    assert loss_fn.current_lambda == pytest.approx(lam)
    loss = loss_fn(head(x), labels)
    expected = slow_a_softmax(x, head.weight.detach(), labels, m, lam)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_labels_in_other_shapes_give_the_same_loss():
    head = AngularLinear(4, 2).train()
    x = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 1, 0, 1])
    y_pred = head(x).detach()
    loss = AngularSoftmaxLoss()
    reference = loss(y_pred, labels)
    torch.testing.assert_close(loss(y_pred, labels[:, None].float()), reference)
    torch.testing.assert_close(loss(y_pred, torch.nn.functional.one_hot(labels, 2).float()), reference)


def test_schedule_end_points():
    schedule = LambdaSchedule()
    assert schedule(0) == 1500.0
    assert schedule(10**9) == 5.0
    assert schedule(2990) == pytest.approx(5.0)
    values = [schedule(i) for i in range(0, 5000, 50)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    custom = LambdaSchedule(lambda_max=1000.0, lambda_min=5.0, gamma=0.12, power=1.0)  # SphereFace's Caffe values
    assert custom(0) == 1000.0 and custom(10**7) == 5.0
    with pytest.raises(ConfigError):
        LambdaSchedule(lambda_max=1.0, lambda_min=2.0)


@pytest.mark.parametrize("iteration, power", [[80, 1.0], [1000, 1.0], [300, 2.0]])
def test_schedule_reaching_floor_at_a_given_iteration(iteration, power):
    schedule = LambdaSchedule.reaching_floor_at(iteration, 1500.0, 5.0, power)
    assert schedule(0) == 1500.0
    assert schedule(iteration) == pytest.approx(5.0)
    assert schedule(iteration - 1) > 5.0 + 1e-6  # not before
    loss = AngularSoftmaxLoss(floor_iteration=iteration, power=power)
    assert loss.schedule == schedule
    with pytest.raises(ConfigError, match="iteration >= 1"):
        LambdaSchedule.reaching_floor_at(0)


def test_gradients_flow_through_network_and_iteration_advances():
    net = CBAMResNet3D(arch="[4,4,[4],[8],[8]]", head="angular").train()
    loss_fn = AngularSoftmaxLoss()
    x = torch.randn(4, 1, 16, 16, 16)
    loss = loss_fn(net(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert int(loss_fn.iteration) == 1
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert float(net.head.weight.grad.abs().sum()) > 0
    assert float(net.stage1.conv.weight.grad.abs().sum()) > 0


def test_eval_logits_give_cross_entropy_and_do_not_advance():
    head = AngularLinear(4, 2).eval()
    x = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    loss_fn = AngularSoftmaxLoss()
    with torch.no_grad():
        logits = head(x)
        loss = loss_fn(logits, labels)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
    assert int(loss_fn.iteration) == 0
    with pytest.raises(ConfigError, match="head='angular'"):
        loss_fn(torch.nn.Linear(4, 2)(x), labels)


def test_eval_logits_are_the_cosine_part_of_training_output():
    head = AngularLinear(4, 3)
    x = torch.randn(5, 4)
    packed = head.train()(x)
    torch.testing.assert_close(logits_from_output(packed), head.eval()(x))
    torch.testing.assert_close(logits_from_output(head(x)), head(x))


def test_softmax_loss_accepts_both_heads():
    labels = torch.tensor([1, 0, 1])
    x = torch.randn(3, 4)
    head = AngularLinear(4, 2).train()
    packed = head(x)
    expected = torch.nn.functional.cross_entropy(packed[:, 0], labels)
    torch.testing.assert_close(SoftmaxCrossEntropyLoss()(packed, labels), expected)
    logits = torch.randn(3, 2)
    torch.testing.assert_close(
        SoftmaxCrossEntropyLoss()(logits, labels), torch.nn.functional.cross_entropy(logits, labels)
    )


def test_build_loss_by_name():
    assert isinstance(build_loss("asoftmax"), AngularSoftmaxLoss)
    assert isinstance(build_loss("A-Softmax", lambda_min=0.0), AngularSoftmaxLoss)
    assert isinstance(build_loss("softmax"), SoftmaxCrossEntropyLoss)
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("focal")
    with pytest.raises(ConfigError):
        AngularLinear(4, 2, margin=5)


def test_plugs_into_monai_supervised_trainer():
    from monai.engines import SupervisedTrainer

    generator = torch.Generator().manual_seed(0)
    samples = [{"image": torch.randn(1, 8, 8, 8, generator=generator), "label": i % 2} for i in range(6)]
    loader = torch.utils.data.DataLoader(samples, batch_size=2)
    net = CBAMResNet3D(arch="[4,4,[4],[4],[8]]", head="angular")
    loss_fn = AngularSoftmaxLoss()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        loss_function=loss_fn,
    )
    trainer.run()
    assert int(loss_fn.iteration) == 6  # 3 iterations x 2 epochs
    assert math.isfinite(float(trainer.state.output[0]["loss"]))
