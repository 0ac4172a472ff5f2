// Each family of kernels registers its functions on the _core module.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "weightpress/parallel.h"

namespace weightpress::bindings {

// Runs a long kernel with the GIL released on a helper thread while the calling thread
// watches for Python signals: on Ctrl-C (KeyboardInterrupt) the kernel is told to stop at its
// next group / DP-layer boundary and the exception propagates, within a fraction of a second
// instead of after the whole tensor.
template <typename Kernel>
void run_cancellable(Kernel&& kernel) {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    std::exception_ptr error;
    std::thread worker;
    {
        pybind11::gil_scoped_release release;
        worker = std::thread([&] {
            try {
                kernel();
            } catch (...) {
                error = std::current_exception();
            }
            std::lock_guard<std::mutex> lock(mutex);
            done = true;
            finished.notify_one();
        });
    }
    bool interrupted = false;
    for (;;) {
        {
            pybind11::gil_scoped_release release;
            std::unique_lock<std::mutex> lock(mutex);
            finished.wait_for(lock, std::chrono::milliseconds(50), [&] { return done; });
            if (done) break;
        }
        if (!interrupted && PyErr_CheckSignals() != 0) {
            interrupted = true;
            cancel_flag() = true;
        }
    }
    {
        pybind11::gil_scoped_release release;
        worker.join();
    }
    if (interrupted) {
        cancel_flag() = false;
        throw pybind11::error_already_set();
    }
    if (error) std::rethrow_exception(error);
}

void register_palettize(pybind11::module_& m);
void register_pack(pybind11::module_& m);
void register_vector_kmeans(pybind11::module_& m);
void register_quantize(pybind11::module_& m);
void register_prune(pybind11::module_& m);
void register_metal(pybind11::module_& m);
void register_error_feedback(pybind11::module_& m);

}  // namespace weightpress::bindings
