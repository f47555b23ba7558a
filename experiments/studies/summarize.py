#!/usr/bin/env python3
# Summary of a comparison of study runs (one run store per run directory): per arm, the mean validation and test
# average accuracy after the last task over seeds (± 95% interval, Student t), the arm of each family chosen on
# validation, and its paired difference to fine-tuning. Standard library only.
import sqlite3, glob, os, re, statistics, math, sys
rows = {}
for d in glob.glob(sys.argv[1] + '/*'):
    c = sqlite3.connect(os.path.join(d, 'run.sqlite'))
    st = c.execute("select status, name from runs").fetchone()
    if not st or st[0] != 'finished': continue
    name = st[1]
    T = c.execute("select max(after_task) from study_matrix").fetchone()[0]
    val = c.execute("select avg(accuracy) from study_matrix where after_task=? and split='val'", (T,)).fetchone()[0]
    test = c.execute("select avg(accuracy) from study_matrix where after_task=? and split='test'", (T,)).fetchone()[0]
    arm, seed = re.match(r'(.*)-s(\d)', name).groups()
    rows.setdefault(arm, []).append((int(seed), val, test))
t95 = {2: 12.706, 3: 4.303}  # Student t quantile 0.975, n - 1 degrees of freedom
def ci(xs):
    m = statistics.mean(xs); 
    if len(xs) < 2: return m, float('nan')
    return m, t95[len(xs)] * statistics.stdev(xs) / math.sqrt(len(xs))
print(f"{'arm':<14}{'seeds':>6}{'val acc (select)':>20}{'test acc, mean ± 95% CI':>28}")
for arm in sorted(rows):
    v = [r[1] for r in rows[arm]]; te = [r[2] for r in rows[arm]]
    mv, _ = ci(v); mt, ht = ci(te)
    print(f"{arm:<14}{len(te):>6}{mv:>20.4f}{mt:>18.4f} ± {ht:.4f}")

import sys
def arm_tests(arm):
    return {s: te for s, _, te in rows.get(arm, [])}
best = {}
for family in ('ewc', 'l2sp'):
    cands = [a for a in rows if a.startswith(family) and len(rows[a]) == 3]
    if cands:
        best[family] = max(cands, key=lambda a: statistics.mean(r[1] for r in rows[a]))
ft = arm_tests('ft')
for family, arm in best.items():
    t = arm_tests(arm)
    d = [t[s] - ft[s] for s in sorted(t) if s in ft]
    m, h = ci(d)
    print(f"selected on validation: {arm}; paired difference to fine-tuning over seeds {sorted(t)}: {m*100:+.1f} ± {h*100:.1f} points")
