// parallel_for: a tiny fork-join helper over std::thread.
//
// Work items are handed out through an atomic counter, but every item writes only
// its own outputs, so results never depend on the thread count or the schedule.
// No OpenMP: its runtime clashes with PyTorch's on macOS.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace weightpress {

// Cooperative cancellation: a caller (the Python bindings, on Ctrl-C) raises the flag; long
// kernels call throw_if_cancelled() between groups and DP layers and unwind with Cancelled.
struct Cancelled : std::exception {
    const char* what() const noexcept override { return "weightpress: cancelled"; }
};

inline std::atomic<bool>& cancel_flag() {
    static std::atomic<bool> flag{false};
    return flag;
}

inline void throw_if_cancelled() {
    if (cancel_flag().load(std::memory_order_relaxed)) throw Cancelled();
}

// Number of worker threads to use when the caller asks for `requested` (<= 0: all cores).
inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

// Calls body(worker_id, item) for every item in [0, n). worker_id is in
// [0, workers) and lets callers keep per-thread scratch. The first exception
// thrown by a body is rethrown on the calling thread after all workers stop.
template <typename Body>
void parallel_for(std::size_t n, int threads, Body&& body) {
    if (n == 0) return;
    const int workers = static_cast<int>(std::min<std::size_t>(n, resolve_threads(threads)));
    if (workers <= 1) {
        for (std::size_t i = 0; i < n; ++i) {
            throw_if_cancelled();
            body(0, i);
        }
        return;
    }
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&](int worker) {
        try {
            for (std::size_t i = next.fetch_add(1); i < n && !failed.load(std::memory_order_relaxed);
                 i = next.fetch_add(1)) {
                throw_if_cancelled();
                body(worker, i);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            failed = true;
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
    run(0);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// Number of workers parallel_for will actually use for n items.
inline int worker_count(std::size_t n, int threads) {
    return static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(n, resolve_threads(threads))));
}

}  // namespace weightpress
