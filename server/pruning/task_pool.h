// Splits one request's kernel work (GEMM column blocks, attention (image, head) pairs,
// LayerNorm / GELU row ranges) across the intra-op threads without OpenMP's join. Internal
// to server/pruning/.
//
// Why: the kernels used at::parallel_for (OpenMP, static split). Every parallel region
// ends in a join that waits for each team thread, so on a machine whose cores are busy
// with other work a thread that is not scheduled stalls the region for a scheduler
// quantum: a 2-core machine at load average 6-11 ran the bundled model at 2 threads 10-100x
// slower than at 1 (bench/results/peers-cpu.md). Here tasks are claimed one at a time from
// a shared counter; the calling thread claims too and waits only for tasks already
// started, so a worker that is not scheduled costs nothing (the caller does its share),
// and on an idle machine the work splits as before. oneDNN and OpenMP run single-threaded
// inside tasks (the workers' and, for the duration, the caller's OpenMP thread count is 1).
//
// Thread-safety: ParallelTasks may be called from many threads; one call at a time uses
// the workers, concurrent and nested calls run their tasks on the calling thread. The
// workers are process-wide (like LibTorch's intra-op pool), started on first use.
#ifndef VITSERVE_SERVER_PRUNING_TASK_POOL_H_
#define VITSERVE_SERVER_PRUNING_TASK_POOL_H_

#include <cstdint>
#include <functional>

namespace vitserve {

// Runs task(0) ... task(tasks - 1), each once, on the calling thread and up to
// threads - 1 pool workers; returns when all have finished. The first exception a task
// throws is rethrown here (the other tasks still run).
void ParallelTasks(int64_t tasks, int threads, const std::function<void(int64_t)>& task);

// While alive, the kernels on this thread split their work across `threads` cores through
// ParallelTasks (IntraOpThreads() returns it) and OpenMP runs single-threaded on this
// thread, so ATen's own parallel ops and OpenBLAS do not start an OpenMP team.
//
// Why: an OpenMP team's threads spin for a while after each parallel region (libgomp's
// default wait policy), on the same cores the pool's workers poll for the next task; with
// both pools alive a 2-core machine ran one DeiT-S batch on 2 threads slower than on 1
// (bench/results/peers-cpu.md, 2026-12-07). With one pool owning the cores the split is
// the pool's alone. An executor makes one of these around each forward, with the thread
// count of the model it runs, so two models with different counts do not interfere (the
// process-wide at::set_num_threads would make the last model loaded win).
// Nesting: the innermost scope wins; the previous state is restored on destruction.
class ScopedIntraOpThreads {
 public:
  explicit ScopedIntraOpThreads(int threads);
  ~ScopedIntraOpThreads();
  ScopedIntraOpThreads(const ScopedIntraOpThreads&) = delete;
  ScopedIntraOpThreads& operator=(const ScopedIntraOpThreads&) = delete;

 private:
  int previous_threads_;
  int previous_omp_threads_;
};

// The count set by the innermost ScopedIntraOpThreads on this thread; 0 when none is.
int IntraOpThreads();

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_TASK_POOL_H_
