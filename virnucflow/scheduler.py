"""What a batch scheduler (SLURM, LSF, PBS) told this process: the one place its variables are read."""

import os

JOB_IDS = ("SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID")
# Set for a job that was given GPUs (SLURM --gpus/--gres, LSF -gpu, PBS ngpus).
GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "LSB_GPU_ALLOC_INFO", "PBS_GPUFILE")
VISIBLE_GPUS = "CUDA_VISIBLE_DEVICES"


def scheduler_environment():
    """{name: value} of the scheduler's variables this process has (set, even empty): job ids, GPU
    allocations, CUDA_VISIBLE_DEVICES, in that order."""
    return {key: os.environ[key] for key in (*JOB_IDS, *GPU_VARIABLES, VISIBLE_GPUS) if key in os.environ}
