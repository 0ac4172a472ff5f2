// TEST ONLY: runs the shipped Metal kernels (the amalgamated MSL text, compiled as C++
// through the metal_stdlib stand-in) over emulated grids, for tests/test_metal_emu.py.
#include <thread>
#include <vector>

#include <metal_stdlib>

#include "weightpress_metal_source.inc"

// The MSL keywords the stand-in defined as macros end here; below is plain C++.
#undef kernel
#undef device
#undef constant
#undef thread
#undef threadgroup

namespace {

// dispatchThreadgroups(groups, lanes): every lane of a threadgroup on its own std::thread,
// threadgroups one after another (so kernel-scope threadgroup arrays are per group).
template <typename Body>
void dispatch(uint32_t groups, uint32_t lanes, Body body) {
    for (uint32_t g = 0; g < groups; ++g) {
        wp_emu::Group group(lanes);
        auto run = [&](uint32_t l) {
            wp_emu::group = &group;
            wp_emu::lane = l;
            body(g, l, lanes, g * lanes + l);
        };
        if (lanes == 1) {
            run(0);
            continue;
        }
        std::vector<std::thread> threads;
        threads.reserve(lanes);
        for (uint32_t l = 0; l < lanes; ++l) threads.emplace_back(run, l);
        for (auto& t : threads) t.join();
    }
}

uint32_t groups_for(uint32_t n, uint32_t lanes) { return (n + lanes - 1) / lanes; }

}  // namespace

extern "C" {

void run_histogram_f16(const uint16_t* values, uint32_t count, uint32_t* bins, uint32_t lanes) {
    wp::HistogramParams p{count};
    auto* atomic_bins = reinterpret_cast<wp_atomic_u32*>(bins);
    dispatch(groups_for(count, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_histogram_f16(values, atomic_bins, p, gid);
    });
}

void run_encode_pack(const uint16_t* values, uint32_t count, const uint8_t* codes, uint32_t nbits, uint8_t* packed,
                     uint32_t lanes) {
    wp::EncodePackParams p{count, nbits, (count * nbits + 7) / 8};
    dispatch(groups_for(p.packed_bytes, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_encode_pack(values, codes, packed, p, gid);
    });
}

void run_pack_bits(const uint8_t* values, uint32_t count, uint32_t nbits, uint8_t* packed, uint32_t lanes) {
    wp::EncodePackParams p{count, nbits, (count * nbits + 7) / 8};
    dispatch(groups_for(p.packed_bytes, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_pack_bits(values, packed, p, gid);
    });
}

void run_nearest_centroid(const float* points, uint32_t n, const float* centroids, uint32_t k, uint32_t dim,
                          uint32_t* labels, uint32_t lanes) {
    wp::NearestParams p{n, k, dim};
    dispatch(groups_for(n, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_nearest_centroid(points, centroids, labels, p, gid);
    });
}

void run_quantize_block(const uint16_t* h16, const float* f32, const uint32_t* dims, uint32_t nbits,
                        uint32_t is_signed, uint32_t symmetric, uint8_t* data, uint32_t* scale_bits,
                        uint8_t* zero_point, uint32_t lanes) {
    wp::QuantizeParams p{dims[0], dims[1], dims[2], dims[3], nbits, is_signed, symmetric, h16 != nullptr};
    const uint32_t blocks = (p.rows / p.block_rows) * (p.cols / p.block_cols);
    dispatch(blocks, lanes, [&](uint32_t g, uint32_t l, uint32_t n, uint32_t) {
        wp_quantize_block(h16, f32, data, scale_bits, zero_point, p, g, l, n, l % 32, l / 32);
    });
}

// Both passes with the host's exclusive scan between them; returns the kept count.
uint32_t run_sparse(const uint16_t* h16, const uint32_t* f32, uint32_t count, uint32_t cut_bits, uint8_t* mask,
                    uint16_t* out16, uint32_t* out32, uint32_t lanes) {
    wp::SparseParams p{count, (count + 7) / 8, h16 != nullptr, cut_bits};
    std::vector<uint32_t> counts(p.mask_bytes), offsets(p.mask_bytes);
    dispatch(groups_for(p.mask_bytes, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_sparse_mask(h16, f32, mask, counts.data(), p, gid);
    });
    uint32_t total = 0;
    for (uint32_t j = 0; j < p.mask_bytes; ++j) {
        offsets[j] = total;
        total += counts[j];
    }
    dispatch(groups_for(p.mask_bytes, lanes), lanes, [&](uint32_t, uint32_t, uint32_t, uint32_t gid) {
        wp_sparse_gather(h16, f32, mask, offsets.data(), out16, out32, p, gid);
    });
    return total;
}

}  // extern "C"
