#!/usr/bin/env python3
"""Per daemon: samples every ~10 min (rss_kb, fds, threads, state_kb, redb_kb, cpu_s), pid changes marked."""
import csv, os
S = os.environ.get("SOAK_DIR", "/tmp/directord-soak")
for n in range(1,6):
    rows=list(csv.DictReader(open(f'{S}/samples/n{n}.csv')))
    print(f'n{n}: {len(rows)} samples')
    print('   utc       pid    rss_kb fds thr state_kb redb_kb cpu_s')
    last=None
    for k,r in enumerate(rows):
        if k%10==0 or k==len(rows)-1 or (last and r['pid']!=last['pid']):
            print(f"   {r['utc'][11:19]} {r['pid']:>6} {r['rss_kb']:>7} {r['fds']:>3} {r['threads']:>3} {r['state_kb']:>8} {r['redb_kb']:>7} {r['cpu_s']:>6}")
        last=r
