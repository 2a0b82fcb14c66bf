"""The paper's published numbers (from the supplementary material), keyed by our experiment names.

Only tables read this module; nothing here is ever reported as our result.
"""
from __future__ import annotations

# Tables B.1/B.2, in params.yaml's keys (loss: CE or the TRADES lambda; lr_decay: the LR lower bound).
_B1 = dict(model="gloro", activation="minmax", warmup=0, batch_size=512, init_lr=1e-3, lr_decay=1e-6,
           power_iterations=5)
_B2 = dict(model="gloro", activation="relu", warmup=0, batch_size=256, init_lr=1e-3, lr_decay=1e-6)
HYPERPARAMETERS = {
    "mnist_2c2f_minmax": _B1 | dict(dataset="mnist", architecture="2C2F", augmentation="none", epochs=500,
                                    eps_train=0.3, eps_test=0.3, init="orthogonal", loss="0.1,2.0,500",
                                    eps_schedule="single"),
    "mnist_4c3f_minmax": _B1 | dict(dataset="mnist", architecture="4C3F", augmentation="none", epochs=200,
                                    eps_train=1.74, eps_test=1.58, init="orthogonal", loss="1.5", eps_schedule="log"),
    "cifar10_6c2f_minmax": _B1 | dict(dataset="cifar10", architecture="6C2F", augmentation="tfds", epochs=800,
                                      eps_train=0.141, eps_test=0.141, init="orthogonal", loss="1.2",
                                      eps_schedule="log"),
    "tinyimagenet_8c2f_minmax": _B1 | dict(dataset="tinyimagenet", architecture="8C2F", augmentation="default",
                                           epochs=800, eps_train=0.141, eps_test=0.141, init="default",
                                           init_lr=1e-4, lr_decay=5e-6, loss="1.2,10,800", eps_schedule="log"),
    "mnist_2c2f_relu_ce": _B2 | dict(dataset="mnist", architecture="2C2F", augmentation="none", epochs=500,
                                     eps_train=0.45, eps_test=0.3, init="default", loss="CE",
                                     eps_schedule="single", power_iterations=10),
    "mnist_2c2f_relu_trades": _B2 | dict(dataset="mnist", architecture="2C2F", augmentation="none", epochs=500,
                                         eps_train=0.45, eps_test=0.3, init="default", loss="0,2,500",
                                         eps_schedule="single", power_iterations=10),
    "mnist_4c3f_relu_ce": _B2 | dict(dataset="mnist", architecture="4C3F", augmentation="none", epochs=300,
                                     eps_train=1.75, eps_test=1.58, init="default", lr_decay=5e-6, loss="CE",
                                     eps_schedule="single", power_iterations=10),
    "mnist_4c3f_relu_trades": _B2 | dict(dataset="mnist", architecture="4C3F", augmentation="none", epochs=300,
                                         eps_train=1.75, eps_test=1.58, init="default", lr_decay=5e-6,
                                         loss="0,3,300", eps_schedule="single", power_iterations=10),
    "cifar10_6c2f_relu_ce": _B2 | dict(dataset="cifar10", architecture="6C2F", augmentation="default", warmup=20,
                                       epochs=800, eps_train=0.1551, eps_test=0.141, init="orthogonal", loss="CE",
                                       eps_schedule="log", power_iterations=5),
    "cifar10_6c2f_relu_trades": _B2 | dict(dataset="cifar10", architecture="6C2F", augmentation="default",
                                           warmup=20, epochs=800, eps_train=0.1551, eps_test=0.141, init="default",
                                           loss="1.2", eps_schedule="log", power_iterations=5),
    "tinyimagenet_8c2f_relu_ce": _B2 | dict(dataset="tinyimagenet", architecture="8C2F", augmentation="default",
                                            epochs=250, eps_train=0.16, eps_test=0.141, init="default",
                                            init_lr=2.5e-4, lr_decay=5e-7, loss="CE", eps_schedule="single",
                                            power_iterations=5),
    "tinyimagenet_8c2f_relu_trades": _B2 | dict(dataset="tinyimagenet", architecture="8C2F",
                                                augmentation="default", epochs=500, eps_train=0.16,
                                                eps_test=0.141, init="default", init_lr=2.5e-4, lr_decay=5e-7,
                                                loss="1,10,500", eps_schedule="single", power_iterations=1),
}
TABLE_OF = {name: "B.1" if "minmax" in name else "B.2" for name in HYPERPARAMETERS}

# Figure D.1a: clean / PGD / VRA (%), seconds per epoch, epochs, per-instance memory (MB).
D1A = {
    "mnist_2c2f_relu_ce": (98.4, 96.9, 94.6, 0.7, 500, 0.7),
    "mnist_2c2f_relu_trades": (98.7, 97.4, 94.6, 0.7, 500, 0.7),
    "mnist_2c2f_minmax": (99.0, 97.8, 95.7, 0.9, 500, 0.7),
    "mnist_4c3f_relu_ce": (92.9, 68.9, 50.1, 2.3, 300, 2.2),
    "mnist_4c3f_relu_trades": (92.8, 67.0, 51.9, 2.0, 300, 2.2),
    "mnist_4c3f_minmax": (97.0, 81.9, 62.8, 3.7, 300, 2.7),
    "cifar10_6c2f_relu_ce": (70.7, 63.8, 49.3, 3.2, 800, 2.6),
    "cifar10_6c2f_relu_trades": (67.9, 61.3, 51.0, 3.3, 800, 2.6),
    "cifar10_6c2f_minmax": (77.0, 69.2, 58.4, 6.9, 800, 3.6),
    "tinyimagenet_8c2f_relu_ce": (31.3, 28.2, 13.2, 14.0, 250, 7.3),
    "tinyimagenet_8c2f_relu_trades": (27.4, 25.6, 15.6, 13.7, 500, 7.3),
    "tinyimagenet_8c2f_minmax": (35.5, 32.3, 22.4, 40.3, 800, 10.4),
}
D1A_COLUMNS = ("clean", "pgd", "vra", "sec_per_epoch", "epochs", "mem_mb_per_instance")

# Later work, not this paper: LiResNet's published VRA at 36/255 (Hu et al., NeurIPS 2023), the
# reference of our LiResNet rows in Figure D.1a's VRA column (its other columns are not comparable).
LIRESNET_VRA = {"cifar10_liresnet": 70.1, "tinyimagenet_liresnet": 33.6}

# Figure D.1b: certification on CIFAR-10 6C2F at 36/255: time (s), memory per instance (MB).
D1B = {"cifar10_6c2f_relu_ce": (0.2, 2.5), "cifar10_6c2f_minmax": (0.4, 1.8)}

# Figure D.1c: global upper bound, optimised global lower bound, mean local lower bound.
# "ReLU GloRo" is taken to be the CE row (the figure does not say which loss).
D1C = {
    "mnist_4c3f_standard": (5.4e4, 1.4e2, 17.1), "mnist_4c3f_relu_ce": (3.2, 3.0, 2.1),
    "mnist_4c3f_minmax": (2.3, 1.9, 0.8),
    "cifar10_6c2f_standard": (1.2e7, 1.1e3, 96.2), "cifar10_6c2f_relu_ce": (18.9, 11.4, 6.2),
    "cifar10_6c2f_minmax": (15.8, 11.0, 3.7),
    "tinyimagenet_8c2f_standard": (2.2e7, 3.6e2, 40.7), "tinyimagenet_8c2f_relu_ce": (7.7, 3.3, 1.5),
    "tinyimagenet_8c2f_minmax": (12.5, 5.9, 0.8),
}

# Table C.1 as reported by each paper (ball-park, not apples-to-apples); None: not reported.
C1 = [
    ("MNIST 0.3", "GloRo", 99.0, 97.8, 95.7), ("MNIST 0.3", "BCP", 93.4, 89.5, 84.7),
    ("MNIST 0.3", "KW", 98.9, 97.8, 94.0), ("MNIST 0.3", "MMR", 98.2, 96.2, 93.6),
    ("MNIST 1.58", "GloRo", 97.0, 81.9, 62.8), ("MNIST 1.58", "BCP", 92.4, 65.8, 47.9),
    ("MNIST 1.58", "KW", 88.1, 67.9, 44.5), ("MNIST 1.58", "BCOP", 98.8, None, 56.7),
    ("MNIST 1.58", "LMT", 86.5, 53.6, 40.6),
    ("CIFAR 36/255", "GloRo", 77.0, 69.2, 58.4), ("CIFAR 36/255", "BCP", 65.7, 60.8, 51.3),
    ("CIFAR 36/255", "KW", 60.1, 56.2, 50.9), ("CIFAR 36/255", "Cayley", 75.3, 67.6, 59.1),
    ("CIFAR 36/255", "BCOP", 72.4, 64.4, 58.7), ("CIFAR 36/255", "LMT", 63.1, 58.3, 38.1),
    ("CIFAR 0.5 (stochastic)", "RS", 67.0, None, 49.0), ("CIFAR 0.5 (stochastic)", "SmoothADV", None, None, 63.0),
    ("CIFAR 0.5 (stochastic)", "MACER", 81.0, None, 59.0),
]
# Our experiment reproducing each GloRo setting of C.1.
C1_OURS = {"MNIST 0.3": "mnist_2c2f_minmax", "MNIST 1.58": "mnist_4c3f_minmax", "CIFAR 36/255": "cifar10_6c2f_minmax"}
