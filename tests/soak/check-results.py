#!/usr/bin/env python3
"""Export every submitter's job records and report jobs whose results are not all in,
non-success states, and per-run summaries. usage: check-results.py [min_i]"""
import json, subprocess, sys, collections, csv, os
S=os.environ.get('SOAK_DIR', '/tmp/directord-soak'); B=S+'/directord-mesh'
subs={}
for r in csv.DictReader(open(S+'/submissions.csv')):
    if r['run_id']: subs[r['run_id']]=r
bad=collections.defaultdict(list); states=collections.Counter(); njobs=0; nres=0
notall=[]
for n in range(1,6):
    f=f'{S}/subs/export-n{n}.json'
    p=subprocess.run([B,'manage','--state-dir',f'{S}/n{n}','--export-jobs',f],capture_output=True,text=True)
    if p.returncode: print('export failed n%d'%n,p.stderr); continue
    for j in json.load(open(f)):
        njobs+=1
        names=[x['name'] for x in j['nodes']]
        res=j.get('results') or {}
        if len(names)!=5: notall.append((j['run_id'],j['job_id'],names))
        for nm in names:
            r=res.get(nm); st=r['state'] if r else 'MISSING'
            states[st]+=1; nres+=1
            if st not in ('success','skipped'):
                bad[j['run_id']].append((j['job_id'],j['definition'][:60],nm,st,(r or {}).get('stderr','')[:150]))
print('jobs',njobs,'results',nres,'states',dict(states))
print('jobs with <5 targets:',len(notall))
for x in notall[:20]: print('  ',x, subs.get(x[0],{}).get('i'))
for run,l in bad.items():
    r=subs.get(run,{})
    print(f"run {run} i={r.get('i')} sub={r.get('submitter')} rc={r.get('rc')} dis={r.get('disruption')}: {len(l)} non-success")
    c=collections.Counter((x[2],x[3]) for x in l); print('   ',dict(c))
    for x in l[:3]: print('    ',x)
