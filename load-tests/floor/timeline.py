#!/usr/bin/env python3
"""Per-job statement timeline of `load-tests latency` from a PostgreSQL log written with
log_min_duration_statement = 0 and log_line_prefix = '%m|%p|' (load-tests/README.md, "Latency floor").
Usage: timeline.py postgres.log — means and medians in ms from the start of each job's module EXISTS."""
import re,sys,statistics as st
from datetime import datetime
rx=re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC\|(\d+)\|(LOG|DETAIL):\s+(.*)$')
def ts(s): return datetime.strptime(s,'%Y-%m-%d %H:%M:%S.%f').timestamp()*1000
recs=[]; pend={}; last=None
for line in open(sys.argv[1]):
    m=rx.match(line.rstrip('\n'))
    if not m:
        continue
    t,pid,lvl,msg=m.groups(); t=ts(t)
    if lvl=='DETAIL':
        if last is not None and msg.startswith('parameters:'): last['params']=msg
        continue
    m2=re.match(r'duration: ([\d.]+) ms\s+(parse|bind|execute|statement)[^:]*: (.*)',msg)
    if not m2: last=None; continue
    d=float(m2.group(1)); kind=m2.group(2); text=m2.group(3)
    if kind in('parse','bind'):
        pend.setdefault(pid,t-d); last=None; continue
    start=pend.pop(pid,t-d)
    r=dict(pid=pid,start=start,end=t,dur=d,text=text,params=''); recs.append(r); last=r
def kind(r):
    q=r['text']
    for k,v in [('INSERT INTO jobs','ins_jobs'),('INSERT INTO job_specs','ins_specs'),('nekton_claim','claim'),('INSERT INTO log_chunks','chunks'),
                ('UPDATE jobs j SET state = i.state','complete'),('FROM log_chunks','chunk_read'),('EXISTS (SELECT 1 FROM modules','exists')]:
        if k in q: return v
    if q.startswith('SELECT j.id'): return 'job_read'
    if q.strip()=='BEGIN': return 'BEGIN'
    if q.strip()=='COMMIT': return 'COMMIT'
    return 'other'
for r in recs: r['k']=kind(r)
jobs=[r for r in recs if r['k']=='ins_jobs']
ph={}
def add(k,v): ph.setdefault(k,[]).append(v)
for ij in jobs[5:-1]:
    jid=re.search(r"\$1 = '([0-9a-f-]{36})'",ij['params']).group(1)
    i=recs.index(ij)
    same=[r for r in recs[i:i+200] if r['pid']==ij['pid']]
    begin=[r for r in recs[max(0,i-20):i] if r['pid']==ij['pid'] and r['k']=='BEGIN'][-1]
    ex=[r for r in recs[max(0,i-30):i] if r['k']=='exists'][-1]
    commit=[r for r in same if r['k']=='COMMIT'][0]
    after=recs[i:i+400]
    jr0=[r for r in after if r['k']=='job_read' and jid in r['params'] and r['start']<commit['end']+200]
    jr=jr0
    claim=[r for r in after if r['k']=='claim' and r['start']>=commit['end']-1][0]
    ch=[r for r in after if r['k']=='chunks' and jid in r['params']][0]
    fb=[r for r in recs[:recs.index(ch)] if r['pid']==ch['pid'] and r['k']=='BEGIN'][-1]
    co=[r for r in after if r['k']=='complete' and jid in r['params']][0]
    fc=[r for r in recs[recs.index(co):recs.index(co)+50] if r['pid']==co['pid'] and r['k']=='COMMIT'][0]
    cr=[r for r in after if r['k']=='chunk_read' and jid in r['params'] and r['start']<fc['end']+200]
    t0=ex['start']
    add('module EXISTS (start = 0)',ex['end']-t0)
    add('submit BEGIN start',begin['start']-t0)
    add('submit COMMIT end',commit['end']-t0)
    add('  of which COMMIT (WAL flush)',commit['dur'])
    add('submit re-read end (201 sent after)',jr[0]['end']-t0)
    add('claim start',claim['start']-t0)
    add('claim end',claim['end']-t0)
    add('  claim duration',claim['dur'])
    add('flush BEGIN start (= finished_at)',fb['start']-t0)
    add('insert_chunks end',ch['end']-t0)
    add('  insert_chunks (parse+plan+exec)',ch['end']-ch['start'])
    add('complete end',co['end']-t0)
    add('  complete (parse+plan+exec)',co['end']-co['start'])
    add('flush COMMIT end',fc['end']-t0)
    add('  of which COMMIT (WAL flush)',fc['dur'])
    fin=[r for r in jr if fc['end']-1<=r['start']<fc['end']+15]
    if fin: add('follower final job read end',fin[-1]['end']-t0)
    crf=[r for r in cr if fc['end']-1<=r['start']<fc['end']+15]
    if crf: add('follower final chunk read end',crf[-1]['end']-t0)
    add('job reads by the SSE handler+follower',len([r for r in jr if r['start']<fc['end']+15])-1)
    add('chunk reads by the follower',len(cr))
print(f'{len(jobs)} jobs; means over {len(ph["claim start"])} (ms from the module EXISTS start)')
for k,v in ph.items(): print(f'{k:42s} {st.mean(v):7.2f}  (median {st.median(v):6.2f})')
