"""``DPOTrainConfig``: every knob of a training run, with defaults that work on the tiny models."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from .loss import GUIDED_SFT_ROWS, LOSS_TYPES

CATEGORY_NAMES = ("clarity_and_focus", "color_and_tone", "lighting_and_exposure", "composition_and_structure",
                  "emotion_and_subject")


@dataclass
class DPOTrainConfig:
    # model and data
    pretrained_model: str = option("tiny:sd", "diffusers pipeline dir or hub id; 'tiny:<family>' builds a tiny "
                                   "pipeline (sd, sdxl, sd3, flux) into cache_dir")
    family: str = option("auto", "model family; auto reads model_index.json",
                         choices=("auto", "sd", "sdxl", "sd3", "flux"))
    revision: str | None = option(None, "hub revision of pretrained_model")
    dataset: str = option("builtin:shapes", "pair dataset: a save_to_disk dir, a .parquet file, or 'builtin:shapes' "
                          "(18 intent pairs of drawn shapes with blur/dark degradations, for smoke runs)")
    max_pairs: int | None = option(None, "use at most this many pairs (after category filtering)", min=1, max=10**9)
    resolution: int = option(32, "training image size (square: resize + center crop)", min=8, max=4096, multiple_of=16)
    # output
    output_dir: str | None = option(None, "run directory; default outputs/runs/<run_name>")
    run_name: str = option("intent-dpo", "run name (output dir, tracker run)")
    overwrite_output_dir: bool = option(False, "allow an output_dir that already holds a finished adapter")
    # adapter
    adapter_mode: str = option("single", "single: one adapter over all pairs; per_category: one adapter per "
                               "category, trained one after the other", choices=("single", "per_category"))
    adapter_name: str = option("intent", "adapter name in single mode")
    categories: list[str] | None = option(None, "per_category: which categories (default: all present in the data)",
                                          choices=CATEGORY_NAMES)
    share_general_pairs: bool = option(True, "per_category: also train every category's adapter on kind=general rows")
    intent_fraction: float = option(0.5, "per_category with share_general_pairs: the share of each adapter's rows that "
        "are its category's intent rows (anti + mirror). Each adapter gets a seeded draw of general rows of that size "
        "instead of all of them, which would dilute a small category (2 intent rows among 14 general ones is 12.5% "
        "intent where the dataset was built at 50%). 0.5 matches `pluralign data build`'s anti_fraction default; 1 "
        "uses no general rows. With too few general rows the share comes out higher; data_mix.json and the model "
        "card record the share achieved", gt=0, max=1)
    rank: int = option(4, "LoRA rank", min=1, max=1024)
    alpha: float = option(4.0, "LoRA alpha (scale alpha/rank, or alpha/sqrt(rank) with use_rslora)", gt=0, max=4096)
    dropout: float = option(0.0, "LoRA dropout", min=0, lt=1)
    target_modules: list[str] | None = option(None, "module names to adapt; default: the family's attention "
                                              "projections (to_q, to_k, to_v, to_out.0)")
    use_rslora: bool = option(False, "rank-stabilised LoRA scaling")
    use_dora: bool = option(False, "weight-decomposed LoRA (DoRA)")
    # objective
    method: str = option("dpo", "dpo: Diffusion-DPO on (chosen, rejected); sft: plain denoising loss on chosen only",
                         choices=("dpo", "sft"))
    beta: float = option(5000.0, "DPO temperature (½β convention; ~5000 for SD1.5/SDXL)", gt=0, max=1e6)
    loss_type: str = option("sigmoid", "DPO loss", choices=LOSS_TYPES)
    label_smoothing: float = option(0.0, "cDPO/robust label smoothing ε", min=0, max=0.499)
    sft_weight: float = option(0.0, "weight of an extra denoising loss on the chosen image", min=0, max=1e7)
    guided_sft_scale: float = option(0.0, "when > 1, the SFT term on kind=anti rows (every row with guided_sft_rows all) fits the classifier-free-guided prediction "
        "u_ref + s*(eps_c - u_ref) (u_ref: the frozen reference's null-prompt prediction) instead of the conditional "
        "one, so that sampling at guidance s reproduces the anti-aesthetic training images instead of exaggerating "
        "them (guidance multiplies an adapter's conditional change by about s). Set it to the guidance you sample "
        "with; costs one reference forward pass per step (shared with preserve_null_weight); 0 or 1 disables", min=0, max=50)
    guided_sft_rows: str = option("anti", "the rows guided_sft_scale applies to: anti (the requests, whose degradation guidance "
                                  "would exaggerate) or all (every row's chosen image: a preference that must hold under "
                                  "every prompt, as a universal aesthetic alignment's, is then not undone by guidance "
                                  "multiplying what is left of a prompt's conditional change)", choices=GUIDED_SFT_ROWS)
    preserve_weight: float = option(0.0, "weight of an output-preservation term on rows of kind mirror/general: the mean squared difference "
        "between the policy's and the frozen reference's predictions, which keeps ordinary prompts where the "
        "reference had them (0 disables; costs nothing extra, the reference pass is already there)", min=0, max=1e7)
    preserve_null_weight: float = option(0.0, "weight of an output-preservation term on the null (empty) prompt: the mean squared difference between "
        "the policy's and the reference's unconditional predictions on the batch's noisy latents. Classifier-free "
        "guidance extrapolates away from that prediction (eps_u + s*(eps_c - eps_u)), so a small adapter drift there "
        "moves every prompt's samples about (s-1) times as far; this term keeps ordinary prompts where the reference "
        "had them. Costs one extra policy and one reference forward pass per step (0 disables)", min=0, max=1e7)
    preserve_null_rows: str = option("all", "the noisy latents preserve_null_weight anchors: all (chosen and rejected) "
                                     "or chosen (half of them: the null-prompt passes shrink from the batch's 2B "
                                     "latents to B, a quarter less compute per step; the guided SFT term reads the "
                                     "chosen rows only either way)", choices=("all", "chosen"))
    prediction_type: str = option("auto", "training target; auto follows the scheduler",
                                  choices=("auto", "epsilon", "v_prediction", "flow_matching"))
    loss_space: str = option("native", "where prediction errors are measured: native (the family's own target) or "
                             "velocity (epsilon families: each error divided by sqrt(alpha_bar_t), the v-prediction loss, "
                             "which weighs the noisiest timesteps, where composition and global colour are decided, as "
                             "much as the rest instead of by their near-zero SNR). Applies to every term of the "
                             "objective; flow-matching families accept only native", choices=("native", "velocity"))
    velocity_share: float = option(1.0, "with loss_space velocity on an epsilon model: x0 errors are weighted by SNR + "
                                   "velocity_share, so 1 is the v loss, 0 the eps loss, and values between give the "
                                   "noisiest timesteps part of the v loss's weight", min=0, max=1)
    # flow-matching families (SD3/3.5, Flux.1)
    weighting_scheme: str = option("logit_normal", "how flow-matching timesteps are drawn (diffusers "
                                   "compute_density_for_timestep_sampling): uniform, logit_normal (SD3 paper) or mode",
                                   choices=("uniform", "logit_normal", "mode"))
    logit_mean: float = option(0.0, "mean of the logit-normal timestep density", min=-10, max=10)
    logit_std: float = option(1.0, "std of the logit-normal timestep density", gt=0, max=10)
    mode_scale: float = option(1.29, "scale of the mode timestep density", min=0, max=5)
    embedded_guidance_scale: float = option(3.5, "Flux: the value fed to the transformer's guidance embedding during training (only when it has "
        "guidance_embeds, e.g. FLUX.1-dev, whose guidance is distilled into that input). Not the classifier-free "
        "guidance scale of sampling (eval's guidance_scale)", min=0, max=50)
    max_sequence_length: int | None = option(None, "SD3/Flux: T5 tokens per prompt (default: the pipeline's, 256 "
                                             "for SD3, 512 for Flux)", min=1, max=512)
    # optimisation
    learning_rate: float = option(1e-4, "peak learning rate", gt=0, max=1)
    lr_scheduler: str = option("constant_with_warmup", "diffusers get_scheduler name, or warmup_stable_decay (the full "
                               "rate until the last lr_decay_steps, then linearly toward 0)",
                               choices=("constant", "constant_with_warmup", "linear", "cosine",
                                        "cosine_with_restarts", "polynomial", "warmup_stable_decay"))
    lr_warmup_steps: int = option(0, "warmup optimizer steps", min=0, max=10**7)
    lr_decay_steps: int = option(0, "warmup_stable_decay: the last optimizer steps, over which the rate falls "
                                 "linearly toward 0 (the last of D steps at 1/(D+1) of it)", min=0, max=10**7)
    lr_decay_share: float = option(0.0, "warmup_stable_decay: the tail as a share of max_steps instead of a count "
                                   "(0.2: the last 0.2 x max_steps steps, rounded with halves up, at least 1), so a recipe's tail fits "
                                   "a shorter or longer run unchanged; give lr_decay_steps or this, not both",
                                   min=0, lt=1)
    max_steps: int = option(20, "optimizer steps (per adapter in per_category mode)", min=1, max=10**7)
    num_train_epochs: float = option(0.0, "when > 0, each adapter trains ceil(num_train_epochs x its rows / pairs per "
        "optimizer step) steps instead of max_steps (pairs per step: train_batch_size x gradient_accumulation_steps x "
        "processes). In per_category mode a small category then trains fewer steps than a large one and draws each of "
        "its rows as often, where a shared max_steps draws a small category's rows many more times (docs/training.md). "
        "run.json and the model card record the steps", min=0, max=1e6)
    train_batch_size: int = option(2, "pairs per micro-step per process", min=1, max=4096)
    gradient_accumulation_steps: int = option(1, "micro-steps per optimizer step", min=1, max=4096)
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    reference_chunk: int = option(1, "DPO: micro-steps whose frozen-reference predictions are computed together, in "
                                  "one no-grad call ahead of them (their pairs, noise and timesteps depend only on "
                                  "the step number). Fewer adapter switches and larger calls; costs K times one "
                                  "reference call's activations. Chunks start at multiples of K, so a resumed run "
                                  "stays exact", min=1, max=4096)
    mixed_precision: str = option("no", "accelerate mixed precision", choices=("no", "fp16", "bf16"))
    optimizer: str = option("adamw", "adamw (torch) or adamw8bit (bitsandbytes)", choices=("adamw", "adamw8bit"))
    adam_beta1: float = option(0.9, "Adam β1", min=0, lt=1)
    adam_beta2: float = option(0.999, "Adam β2", min=0, lt=1)
    adam_weight_decay: float = option(1e-2, "AdamW weight decay", min=0, max=1)
    adam_epsilon: float = option(1e-8, "Adam ε", gt=0, max=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables)", min=0, max=1e6)
    ema_decay: float = option(0.0, "keep an exponential moving average of the LoRA weights with this decay (e.g. "
                              "0.995, about the last 200 steps; warmed up as (1+step)/(10+step), which reaches 0.995 at step 1790 "
                              "and 0.998 at step 4490, so a shorter run averages about its last step/9 steps) and export it "
                              "instead of the last iterate; saved in checkpoints. 0 disables", min=0, max=0.99999)
    seed: int = option(0, "seed for init, data order, noise and timesteps", min=0, max=2**32 - 1)
    dataloader_num_workers: int = option(0, "dataloader workers", min=0, max=256)
    # cache
    use_cache: bool = option(True, "encode latents and prompt embeddings once and train from the on-disk cache")
    encode_batch_size: int = option(16, "images per VAE call when the dataset is encoded to latents; the VAE "
                                    "encoder's activations at 1024 px are large, so lower this if that step runs "
                                    "out of GPU memory", min=1, max=4096)
    cache_dir: str | None = option(None, "cache root; default ~/.cache/pluralign (or $PLURALIGN_CACHE)")
    # checkpoints and logging
    checkpointing_steps: int = option(0, "save a resumable checkpoint every N optimizer steps (0: only at the end)", min=0, max=10**7)
    checkpoints_total_limit: int | None = option(2, "keep at most this many checkpoints", min=1, max=1000)
    resume_from_checkpoint: str | None = option(None, "'latest' (the newest intact checkpoint of the run in "
                                                "output_dir) or a checkpoint directory")
    allow_config_change: bool = option(False, "resume even though settings that change the trajectory (lr, batch, "
                                       "seed, loss, data, base model...) differ from the run's run.json; the "
                                       "accepted differences are recorded there")
    report_to: str = option("none", "accelerate tracker: wandb, tensorboard, all or none")
    tracker_project: str = option("pluralign", "tracker project name")
    logging_steps: int = option(1, "log metrics every N optimizer steps", min=1, max=10**7)
    validation_steps: int = option(0, "render validation images every N steps (0: only at the end if prompts set)", min=0, max=10**7)
    validation_prompts: list[str] | None = option(None, "validation prompts (ordinary and anti-aesthetic)")
    validation_seed: int = option(0, "seed of validation images", min=0, max=2**32 - 1)
    validation_inference_steps: int = option(4, "sampler steps of validation images", min=1, max=1000)
    # export
    export_kohya: bool = option(True, "also write a kohya/webui .safetensors beside the diffusers LoRA")
    push_to_hub: bool = option(False, "push the adapter directory to the hub")
    hub_model_id: str | None = option(None, "hub repo id for push_to_hub")
    eval_summary: str | None = option(None, "path to an eval results.json summarised in the model card")
