"""Schedules give the paper's formulas (Appendix B) at boundary epochs; bad strings raise clear errors."""
import math

import pytest

from gloro_repro.gloro.schedules import EpsSchedule, LambdaSchedule, LRSchedule, TrainingSchedule

E01 = math.exp(0.01)


@pytest.mark.parametrize("text,eps,epochs,t,expected", [
    ("single", 0.3, 500, 0, 0.3),
    ("single", 0.3, 500, 499, 0.3),
    ("0.1,0.5,10", 0.45, 100, 0, 0.1),
    ("0.1,0.5,10", 0.45, 100, 5, 0.3),
    ("0.1,0.5,10", 0.45, 100, 10, 0.5),
    ("0.1,0.5,10", 0.45, 100, 11, 0.45),  # after the ramp: eps_train
    ("log", 1.74, 200, 0, 0.0174),  # 0.01 * eps_train
    ("log", 1.74, 200, 50, 1.74 * math.log((math.e - E01) * 0.5 + E01)),
    ("log", 1.74, 200, 100, 1.74),  # reaches eps_train at epochs / 2
    ("log", 1.74, 200, 150, 1.74),
])
def test_eps_schedule(text, eps, epochs, t, expected):
    assert EpsSchedule.parse(text, eps, epochs)(t) == pytest.approx(expected)


def test_log_schedule_rises_monotonically():
    schedule = EpsSchedule.parse("log", 0.141, 800)
    values = [schedule(t) for t in range(0, 401)]
    assert all(a < b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("text,t,expected", [
    ("1.5", 0, 1.5), ("1.5", 300, 1.5),
    ("0.1,2.0,500", 0, 0.1), ("0.1,2.0,500", 250, 1.05), ("0.1,2.0,500", 499, 0.1 + 1.9 * 499 / 500),
    ("0.1,2.0,500", 500, 2.0), ("0,3,300", 150, 1.5), ("1,10,500", 600, 10.0),
])
def test_lambda_schedule(text, t, expected):
    assert LambdaSchedule.parse(text)(t) == pytest.approx(expected)


@pytest.mark.parametrize("t,expected", [
    (0, 1e-3), (250, 1e-3), (499, 1e-6),
    (374.5, math.sqrt(1e-3 * 1e-6)),  # half-way through the decay: the geometric mean
])
def test_lr_decay(t, expected):
    assert LRSchedule.parse("decay to 1e-6", 1e-3, 500)(t) == pytest.approx(expected, rel=1e-9)


def test_lr_forms():
    assert LRSchedule.parse(5e-6, 1e-3, 300)(299) == pytest.approx(5e-6)
    assert LRSchedule.parse("constant", 1e-3, 300)(299) == 1e-3
    assert LRSchedule.parse(None, 1e-3, 300)(299) == 1e-3
    assert LRSchedule.parse("decay to 1e-6", 1e-3, 1)(0) == 1e-3


def test_warmup_then_robust_schedule():
    schedule = TrainingSchedule(
        warmup=20, eps=EpsSchedule.parse("log", 0.1551, 800), lam=LambdaSchedule.parse("1.2"),
        lr=LRSchedule.parse("decay to 1e-6", 1e-3, 800))
    assert schedule.total_epochs == 820
    first = schedule.at(0)
    assert not first.robust and first.lr == 1e-3
    start = schedule.at(20)
    assert start.robust and start.eps == pytest.approx(0.001551) and start.lam == 1.2
    assert schedule.at(819).lr == pytest.approx(1e-6)


@pytest.mark.parametrize("parse,text,message", [
    (lambda s: EpsSchedule.parse(s, 0.3, 10), "linear",
     r"bad eps schedule 'linear'; expected 'single', 'log', or 'x,y,e'"),
    (lambda s: EpsSchedule.parse(s, 0.3, 10), "0.1,0.3", r"bad eps schedule '0.1,0.3'"),
    (lambda s: EpsSchedule.parse(s, 0.3, 10), "0.1,0.3,0", "e must be a positive epoch count"),
    (lambda s: EpsSchedule.parse(s, 0.3, 10), "a,b,c", r"bad eps schedule 'a,b,c'"),
    (lambda s: EpsSchedule.parse(s, 0.0, 10), "single", "eps_train > 0"),
    (LambdaSchedule.parse, "CE", r"bad TRADES lambda 'CE'; expected a number"),
    (LambdaSchedule.parse, "-1", "must be a finite number >= 0"),
    (LambdaSchedule.parse, "1,2", r"bad TRADES lambda schedule '1,2'"),
    (lambda s: LRSchedule.parse(s, 1e-3, 10), "decay to fast",
     r"bad LR schedule 'decay to fast'; expected 'decay to <lb>'"),
    (lambda s: LRSchedule.parse(s, 1e-3, 10), "decay to 1e-2", r"lower bound must be in \(0, init_lr"),
])
def test_bad_strings_name_the_value_and_the_accepted_forms(parse, text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_negative_warmup_rejected():
    with pytest.raises(ValueError, match="warm-up must be >= 0"):
        TrainingSchedule(-1, EpsSchedule.parse("single", 0.3, 5), LambdaSchedule.parse(1),
                         LRSchedule.parse(None, 1e-3, 5))
