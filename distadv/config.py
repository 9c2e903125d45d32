"""The typed run configuration (dataclasses = the schema Hydra validates overrides against)."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Dict, List, Optional


@dataclass
class ThreatConfig:
    """One attack: PGD over a norm ball in [0, 1] pixel units (FGSM: steps=1, no random start)."""

    norm: str = "linf"          # linf | l2
    eps: float = 0.03           # radius, pixel units (0.03 ~ 8/255)
    alpha: float = 0.0075       # step size
    steps: int = 10             # iterations (>= 1)
    random_start: bool = True   # start from a uniform point in the ball (PGD); false: x
    restarts: int = 1           # worst case per example is kept
    loss: str = "ce"            # ce | cw
    targeted: bool = False      # targets = (y + 1 + randint(C - 1)) % C, drawn per batch
    bn_mode: str = "eval"       # model mode during the attack: eval (running stats) | train
    eot_samples: int = 1        # gradients averaged over this many random forwards (EOT)


@dataclass
class DataConfig:
    """Which data set, where it lives, and how it is split and batched."""

    name: str = "digits"        # digits | fashion_mnist | cifar10 | cifar100
    root: Optional[str] = None  # folder with the data set files; default per data set
                                # (CIFAR: data/, fashion_mnist: /usr/share/datasets/fashion-mnist)
    download: bool = False      # allow torchvision to download the data set into root
    val_size: int = 200         # validation examples held out from the training set
    split_seed: int = 0         # seeds the validation split (same on every rank and resume)
    image_size: Optional[int] = None  # digits only: 8 (the native scans), 16, 24 or 32 (default)
    test_size: Optional[int] = None  # the first N test examples only (quick runs; default all)
    batch_size: int = 64        # GLOBAL training batch, split evenly across processes
    eval_batch_size: int = 256  # global evaluation batch
    augment: bool = False       # random crop (pad 4) + horizontal flip on training batches
    loader: str = "torch"       # torch (DataLoader) | device (split resident on device) | ffcv
    verify_checksums: bool = True  # CIFAR: check torchvision's md5s (tests' tiny archives: false)
    num_workers: int = 0        # DataLoader worker processes (loader=torch)
    synthetic: bool = False     # random data of the data set's shape (smoke tests, no files)
    synthetic_size: int = 64    # examples per split when synthetic
    # Generated training images (distadv/data/generated): a set's folder (tools/
    # import_generated.py writes one) or a list of them. Training batches only.
    extra: Any = None
    extra_fraction: float = 0.7     # generated share of every batch: int(batch * fraction)
    extra_shares: Optional[List[float]] = None  # per set, any positive weights; null: by size
    extra_replacement: bool = True  # true: uniform draws (DM-AT); false: a seeded permutation
                                    # of each set, continued across epochs (resumes exactly)
    epoch_samples: Optional[int] = None  # with extra: samples per epoch (DM-AT: 50000);
                                         # null: the training split's size


@dataclass
class ModelConfig:
    """Architecture from the registry in ``distadv.models``."""

    name: str = "basicnet"          # a registered model (distadv/models/)
    width: Optional[float] = None   # width factor (preact_resnet18 only)
    activation: Optional[str] = None  # relu | silu | lwta (smallcnn, resnet20, resnet,
                                      # preact_resnet18, preact_resnet, wrn*; null: the model's own)
    # Per-stage architecture of the generic nets (preact_resnet, resnet), lists of equal length:
    blocks: Optional[List[int]] = None  # blocks per stage (null: PreActResNet18's / ResNet20's)
    widths: Optional[List[int]] = None  # channels per stage (null: 64-128-256-512 / 16-32-64)
    # Stochastic LWTA (model.activation=lwta, lwta_* models; distadv/models/lwta.py). At
    # evaluation the winner is a hard random draw (the paper's temperature 0.01 in the limit).
    lwta_competitors: int = 2       # units competing in each block (U; widths must divide by it)
    lwta_temperature: float = 0.67  # Gumbel-softmax temperature of the relaxed draw in training
    lwta_kl: float = 0.0            # weight of the KL of the winner posteriors to the uniform
                                    # prior added to the training loss (the paper's variational
                                    # term; 1 = the ELBO; 0 = off, as the reference code trains)
    input_noise: float = 0.0        # sigma of Gaussian input noise at inference (0 = off)


@dataclass
class OptimConfig:
    """SGD and the learning-rate schedule (stepped once per optimizer step)."""

    epochs: int = 50                # training epochs
    lr: float = 0.01                # peak learning rate (SGD)
    momentum: float = 0.9           # SGD momentum
    weight_decay: float = 5e-4      # L2 weight decay
    nesterov: bool = False          # Nesterov momentum
    schedule: str = "multistep"     # multistep | cosine | onecycle | constant
    milestones: List[int] = field(default_factory=lambda: [30, 40])  # epochs (multistep)
    gamma: float = 0.1              # multistep factor
    pct_start: float = 0.4          # onecycle: fraction of steps spent warming up
    warmup: float = 0.0             # cosine: fraction of steps of linear warm-up (DM-AT: 0.025)
    no_decay_bn_bias: bool = False  # no weight decay on BatchNorm weights and biases (1-d params)
    grad_clip: float = 0.0          # max global grad norm (0 = off)


@dataclass
class StrategyConfig:
    """How a batch becomes a loss (``distadv.strategies``)."""

    name: str = "adversarial"       # natural | adversarial | mat | trades | fgsm_rs | n_fgsm |
                                    # grad_align | free
    mode: str = "rand"              # mat: rand (one norm per batch) | max (worst per example)
    natural_fraction: float = 0.0   # share of batches trained on clean images (mix)
    trades_beta: float = 6.0        # trades: weight of the KL (robustness) term
    label_smoothing: float = 0.0    # trades: on the clean cross-entropy term (DM-AT: 0.1)
    trades_start: str = "uniform"   # trades attack's start: uniform in the ball | normal
                                    # (0.001 * N(0, 1), the TRADES reference code's)
    eps_warmup_epochs: int = 0      # ramp training eps/alpha linearly from 0 over N epochs
    # The single-step strategies (distadv/strategies/fast.py, grad_align.py, free.py), in eps:
    step: Optional[float] = None    # the gradient step; null: fgsm_rs 1.25, n_fgsm/grad_align/free 1
    noise: Optional[float] = None   # the uniform start's radius; null: fgsm_rs 1, n_fgsm 2, grad_align 0
    grad_align_lambda: float = 0.2  # grad_align: weight of 1 - cos(grad at x, grad at x + eta)
    free_replays: int = 4           # free: optimizer steps on each batch (m; divide epochs by m)


@dataclass
class EarlyStopConfig:
    """Best-robust checkpointing and early stopping (Rice et al. 2020)."""

    metric: str = "pgd_linf"        # natural or a key of eval_attacks
    patience: int = 10              # epochs without improvement before stopping (0 = never)
    min_delta: float = 0.0          # smallest rise of the metric that counts as better


@dataclass
class AutoAttackCheckConfig:
    """The end of every run: its best checkpoint attacked on the test split with the official
    AutoAttack (budgeted), next to the run's PGD on the same examples; a PGD figure that
    overstates robustness by more than ``tolerance`` is flagged (``distadv/eval/crosscheck.py``)."""

    enabled: bool = True            # run the check at the end of the run
    # AutoAttack components at the standard budgets; null = the whole ``version``.
    attacks: Optional[List[str]] = field(default_factory=lambda: ["apgd-ce", "apgd-t"])
    version: str = "auto"           # when attacks is null: auto | standard | rand | plus
    max_examples: int = 1000        # the first N test examples
    # Budget changes (null = the package's: 100 iterations, 9 targets); named in the output,
    # for smoke tests and quick looks, never for a number to quote.
    steps: Optional[int] = None
    target_classes: Optional[int] = None  # APGD-T targets (null: the package's 9)
    tolerance: float = 0.015        # PGD may exceed AutoAttack by this much (1.5 points)


@dataclass
class LogConfig:
    """Experiment trackers and console output (rank 0 only)."""

    # Where the scalars, the resolved config and the final metrics go (engine/trackers.py):
    # tensorboard (<run>/tb; also the image grid, text, HParams) | mlflow | wandb | aim, the
    # last three through Accelerate's trackers (mlflow: pip install -e '.[trackers]').
    trackers: List[str] = field(default_factory=lambda: ["tensorboard"])
    tensorboard: bool = True        # write <run>/tb event files (false: left out of trackers)
    mlflow_uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else <run>/mlruns (file store)
    experiment: Optional[str] = None  # MLflow experiment, W&B project (null: the run's name)
    image_grid: int = 8             # validation images shown clean/adversarial/perturbation
    progress: str = "auto"          # auto (bar on a TTY) | always | never
    keep_epochs: bool = False       # also write every epoch's eval weights (checkpoints/
                                    # epoch-NNN.safetensors): attack each epoch afterwards


@dataclass
class RuntimeConfig:
    """Execution knobs that do not change the experiment (ignored when matching a resume)."""

    precision: str = "fp32"         # fp32 | bf16 | fp16 | auto (bf16 where the GPU/CPU has
                                    # native bf16, else fp32: engine/precision.py)
    max_steps_per_epoch: Optional[int] = None   # cap (debug runs)
    max_epochs_per_session: Optional[int] = None  # stop cleanly after N epochs; rerun resumes
    timeout_s: int = 1800           # process-group timeout: a hung peer fails after this
    channels_last: bool = True      # NHWC memory format: 1.3-2x faster attacks on this CPU (BENCHMARKS.md)
    compile: bool = False           # torch.compile the model (before Accelerate's prepare)
    compile_cache_dir: Optional[str] = None  # TORCHINDUCTOR_CACHE_DIR (default: torch's)
    sync_bn: bool = False           # SyncBatchNorm across ranks (GPU only)


@dataclass
class BaseRunConfig:
    """The sections every run has; ``RunConfig`` adds one per registered add-on method."""

    recipe: str = "demo"            # the recipe (recipes/recipe/NAME.yaml) the run came from
    name: Optional[str] = None      # run name (default: the recipe's name)
    runs_root: str = "runs"         # folder of the run directories
    run_dir: Optional[str] = None   # default: <runs_root>/<name>
    seed: int = 0                   # seeds the model init, batches and attacks (per epoch)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train_attacks: Dict[str, ThreatConfig] = field(default_factory=dict)
    eval_attacks: Dict[str, ThreatConfig] = field(default_factory=dict)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    autoattack: AutoAttackCheckConfig = field(default_factory=AutoAttackCheckConfig)
    log: LogConfig = field(default_factory=LogConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def _with_addons(base: type) -> type:
    """``base`` plus one section per add-on training method (``distadv.strategies.addons``:
    ``ema.*``, ...), each with its own registered dataclass as the schema."""
    from .strategies import addon_configs   # the methods register themselves on import

    fields = [(k, c, field(default_factory=c)) for k, c in addon_configs().items()]
    cls = make_dataclass("RunConfig", fields, bases=(base,))
    cls.__doc__ = ("Everything a run needs. ``recipe`` names the YAML in recipes/recipe/ it "
                   "came from; the add-on sections: " + ", ".join(k for k, _, _ in fields) + ".")
    cls.__module__ = __name__
    return cls


RunConfig = _with_addons(BaseRunConfig)

# Sections that may differ between an interrupted run and its resume (they change how a run
# is executed or checked, not what it trains).
RESUMABLE_SECTIONS = ("runtime", "log", "autoattack")
