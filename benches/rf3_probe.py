import sys, time, statistics
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
sys.path.insert(0, str(Path(__file__).parent))
from cluster import cluster, Node, replicated, free_port
from run import DDL
binary, parquet, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
import shutil; shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
tbl = pq.read_table(parquet)
blocks = []
for i in range(30):
    buf = pa.BufferOutputStream(); pq.write_table(tbl.slice(i * 100000, 100000), buf, compression="none")
    blocks.append(buf.getvalue().to_pybytes())
nodes = cluster(binary, root / "rf3", 3)
single = Node(binary, root, "single", "", free_port(), 0); single.start()
try:
    for nd in nodes: nd.sh.post(replicated(DDL, "r"))
    single.sh.post(DDL.replace("TABLE hits", "TABLE s"))
    nodes[0].sh.post("SYSTEM STOP MERGES r"); nodes[1].sh.post("SYSTEM STOP MERGES r"); nodes[2].sh.post("SYSTEM STOP MERGES r")
    single.sh.post("SYSTEM STOP MERGES s")
    tr, ts = [], []
    for b in blocks:
        t = time.perf_counter(); nodes[0].sh.post("INSERT INTO r FORMAT Parquet", b); tr.append(time.perf_counter() - t)
        t = time.perf_counter(); single.sh.post("INSERT INTO s FORMAT Parquet", b); ts.append(time.perf_counter() - t)
    print("rf3 median ms", statistics.median(tr) * 1000, "single", statistics.median(ts) * 1000)
    cpu = [nd.cpu_seconds() for nd in nodes]; print("cpu s per node", cpu, "single", single.cpu_seconds())
finally:
    for nd in nodes: nd.kill()
    single.kill()
