"""`grugctl run`: runner.py runs each file in a child process and records it, rayrun.py / raytask.py do
the same as Ray tasks, records.py is the tracked run record and its archive row (and what makes one
trustworthy), results.py the keys an experiment's results JSON holds, hostjobs.py whether a run shared
its machine."""
