# How jobs run. Data preparation, statistics and decoding jobs run as local parallel processes
# (utils/run_jobs.sh). Training (stage 6) is started by asr.sh's --dist_launcher:
#   auto      ESPnet's own launch on this node: one process, or one per GPU with --ngpu N > 1
#   torchrun  python -m torch.distributed.run on each node (--num_nodes, --rdzv_endpoint)
#   slurm     train_cmd below, run inside a Slurm allocation (sbatch/salloc): it starts one
#             task per node (asr.sh adds --nodes <num_nodes> --ntasks-per-node 1) and ESPnet
#             spawns --ngpu processes in each, as ESPnet's launch with slurm.pl does
# As in ESPnet's cmd.sh, edit train_cmd for your cluster (partition, account, time limit), or
# give --train_cmd "..." to asr.sh. The worked commands are in docs/recipe.md, "Training at scale".
train_cmd="srun --export=ALL --kill-on-bad-exit=1"
