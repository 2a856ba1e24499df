# How jobs run. Local parallel processes (utils/run_jobs.sh) is the only backend the recipe
# ships; on a cluster, submit ./run.sh itself as one job per stage range.
