#!/usr/bin/env python3
"""Prints Design/projection.md's seed-regime table for a calibration profile:

    python3 scripts/seed_table.py Design/projection-profile.json

from `txsim project --profile P --senders 8,16,32,64 --queues 1,2 --line-rate-gbps 200 --json`
and the same with `--swiotlb-mib 1024` (a release build at .build/release/txsim).
A bound is named where it changes down a column; z is the zero-copy fraction below 1."""
import json
import subprocess
import sys
prof=sys.argv[1]
tx='.build/release/txsim'
def run(extra):
    out=subprocess.run([tx,'project','--profile',prof,'--line-rate-gbps','200','--json']+extra,capture_output=True,text=True).stdout
    return json.loads(out)
s=run(['--senders','8,16,32,64','--queues','1,2'])
g=run(['--senders','8,16,32,64','--queues','1,2','--swiotlb-mib','1024'])
names=['bounce','frag-refill','page-pool','decrypted-pool','inline-decrypt']
print('| queues | senders | '+' | '.join(names)+' | page-pool, 1 GiB swiotlb |')
print('| --- '*(3+len(names))+'|')
first={}
for q in (1,2):
    for n in (8,16,32,64):
        cells=[]
        for d in names:
            r=[x for x in s if x['queues']==q and x['senders']==n and x['design']==d][0]
            v=('%.1f'%r['gbps']).replace('200.0','200')
            notes=[]
            b=r['bound']
            if (q,d) not in first or first[(q,d)]!=b or b=='bounce-pool capacity':
                notes.append({'line rate':'line'}.get(b,b))
            first[(q,d)]=b
            if r['zero_copy_fraction']<0.999 and d in ('frag-refill','page-pool'): notes.append('z %.2f'%r['zero_copy_fraction'])
            cells.append(v+(' (%s)'%', '.join(notes) if notes else ''))
        r=[x for x in g if x['queues']==q and x['senders']==n and x['design']=='page-pool'][0]
        cells.append(('%.1f'%r['gbps']).replace('200.0','200'))
        print('| %d | %d | '%(q,n)+' | '.join(cells)+' |')
