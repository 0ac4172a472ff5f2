// The Metal host (Apple platforms only; Objective-C++ with ARC). Compiles the amalgamated
// kernel source (metal/amalgamate.py, embedded as kWeightpressMetalSource) at first use
// with fast math off, keeps one pipeline per kernel, and runs the kernels on shared
// (unified-memory) buffers. NOT YET RUN ON A MAC: see metal/README.md.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "weightpress/kernels/params.h"
#include "weightpress/metal_backend.h"

extern const char kWeightpressMetalSource[];

namespace weightpress {
namespace {

struct Context {
    id<MTLDevice> device = nil;
    id<MTLCommandQueue> queue = nil;
    id<MTLLibrary> library = nil;
    NSMutableDictionary<NSString*, id<MTLComputePipelineState>>* pipelines = nil;
    std::string error;
};

Context& context() {
    static Context ctx;
    static std::once_flag once;
    std::call_once(once, [] {
        @autoreleasepool {
            ctx.device = MTLCreateSystemDefaultDevice();
            if (ctx.device == nil) {
                ctx.error = "no Metal device";
                return;
            }
            MTLCompileOptions* options = [MTLCompileOptions new];
            if (@available(macOS 15.0, *)) {
                options.mathMode = MTLMathModeSafe;  // no fast math, no reassociation
            } else {
                options.fastMathEnabled = NO;
            }
            NSError* err = nil;
            NSString* source = [NSString stringWithUTF8String:kWeightpressMetalSource];
            ctx.library = [ctx.device newLibraryWithSource:source options:options error:&err];
            if (ctx.library == nil) {
                ctx.error = std::string("compiling the kernels failed: ") +
                            (err ? err.localizedDescription.UTF8String : "unknown error");
                return;
            }
            ctx.queue = [ctx.device newCommandQueue];
            ctx.pipelines = [NSMutableDictionary new];
        }
    });
    return ctx;
}

id<MTLComputePipelineState> pipeline(const char* name) {
    Context& ctx = context();
    if (!ctx.error.empty()) throw std::runtime_error("Metal: " + ctx.error);
    NSString* key = [NSString stringWithFormat:@"wp_%s", name];
    id<MTLComputePipelineState> p = ctx.pipelines[key];
    if (p == nil) {
        NSError* err = nil;
        id<MTLFunction> fn = [ctx.library newFunctionWithName:key];
        if (fn == nil) throw std::runtime_error(std::string("Metal: no kernel ") + key.UTF8String);
        p = [ctx.device newComputePipelineStateWithFunction:fn error:&err];
        if (p == nil) throw std::runtime_error(std::string("Metal: pipeline ") + key.UTF8String + " failed");
        ctx.pipelines[key] = p;
    }
    return p;
}

id<MTLBuffer> shared(const void* data, size_t bytes) {
    return [context().device newBufferWithBytes:data length:(bytes ? bytes : 4) options:MTLResourceStorageModeShared];
}

id<MTLBuffer> scratch(size_t bytes) {
    return [context().device newBufferWithLength:(bytes ? bytes : 4) options:MTLResourceStorageModeShared];
}

// One 1-D dispatch of `threads` threads (kernels check their bound) and a wait for it.
template <typename Encode>
void run_1d(const char* name, std::size_t threads, Encode encode) {
    id<MTLComputePipelineState> p = pipeline(name);
    id<MTLCommandBuffer> cb = [context().queue commandBuffer];
    id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoder];
    [enc setComputePipelineState:p];
    encode(enc);
    const NSUInteger lanes = MIN((NSUInteger)256, p.maxTotalThreadsPerThreadgroup);
    const NSUInteger groups = (threads + lanes - 1) / lanes;
    [enc dispatchThreadgroups:MTLSizeMake(groups ? groups : 1, 1, 1) threadsPerThreadgroup:MTLSizeMake(lanes, 1, 1)];
    [enc endEncoding];
    [cb commit];
    [cb waitUntilCompleted];
    if (cb.error) throw std::runtime_error(std::string("Metal: ") + cb.error.localizedDescription.UTF8String);
}

std::uint32_t checked_u32(std::size_t n, const char* what) {
    if (n > 0xffffffffu) throw std::runtime_error(std::string("Metal: ") + what + " exceeds 2^32 elements");
    return static_cast<std::uint32_t>(n);
}

}  // namespace

MetalStatus metal_status() {
    Context& ctx = context();
    if (!ctx.error.empty()) return {false, ctx.error};
    return {true, std::string(ctx.device.name.UTF8String)};
}

void metal_quantize(const void* weight, bool is_half, std::uint32_t rows, std::uint32_t cols,
                    std::uint32_t block_rows, std::uint32_t block_cols, int nbits, bool is_signed, bool symmetric,
                    std::uint8_t* data, void* scale, std::uint8_t* zero_point) {
    @autoreleasepool {
        id<MTLComputePipelineState> p = pipeline("quantize_block");
        const size_t n = size_t(rows) * cols;
        const uint32_t blocks = (rows / block_rows) * (cols / block_cols);
        wp::QuantizeParams params{rows, cols, block_rows, block_cols, uint32_t(nbits), is_signed, symmetric, is_half};
        id<MTLBuffer> w = shared(weight, n * (is_half ? 2 : 4));
        id<MTLBuffer> out = scratch(n);
        id<MTLBuffer> sc = scratch(size_t(blocks) * 4);
        id<MTLBuffer> zp = scratch(blocks);
        id<MTLCommandBuffer> cb = [context().queue commandBuffer];
        id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoder];
        [enc setComputePipelineState:p];
        [enc setBuffer:w offset:0 atIndex:0];  // h16 (read when is_half)
        [enc setBuffer:w offset:0 atIndex:1];  // f32 (read otherwise)
        [enc setBuffer:out offset:0 atIndex:2];
        [enc setBuffer:sc offset:0 atIndex:3];
        [enc setBuffer:zp offset:0 atIndex:4];
        [enc setBytes:&params length:sizeof params atIndex:5];
        const NSUInteger lanes = MIN((NSUInteger)256, p.maxTotalThreadsPerThreadgroup);
        [enc dispatchThreadgroups:MTLSizeMake(blocks, 1, 1) threadsPerThreadgroup:MTLSizeMake(lanes, 1, 1)];
        [enc endEncoding];
        [cb commit];
        [cb waitUntilCompleted];
        if (cb.error) throw std::runtime_error(std::string("Metal: ") + cb.error.localizedDescription.UTF8String);
        std::memcpy(data, out.contents, n);
        const uint32_t* s = static_cast<const uint32_t*>(sc.contents);
        for (uint32_t b = 0; b < blocks; ++b) {
            if (is_half) static_cast<uint16_t*>(scale)[b] = uint16_t(s[b]);
            else std::memcpy(static_cast<float*>(scale) + b, s + b, 4);
        }
        std::memcpy(zero_point, zp.contents, blocks);
    }
}

void metal_histogram_f16(const std::uint16_t* values, std::size_t n, std::uint32_t* bins) {
    @autoreleasepool {
        wp::HistogramParams params{checked_u32(n, "histogram")};
        id<MTLBuffer> v = shared(values, n * 2);
        id<MTLBuffer> b = scratch(65536 * 4);
        std::memset(b.contents, 0, 65536 * 4);
        run_1d("histogram_f16", n, [&](id<MTLComputeCommandEncoder> enc) {
            [enc setBuffer:v offset:0 atIndex:0];
            [enc setBuffer:b offset:0 atIndex:1];
            [enc setBytes:&params length:sizeof params atIndex:2];
        });
        std::memcpy(bins, b.contents, 65536 * 4);
    }
}

void metal_encode_pack(const std::uint16_t* values, std::size_t n, const std::uint8_t* codes, int nbits,
                       std::uint8_t* packed) {
    @autoreleasepool {
        const std::size_t bytes = (n * std::size_t(nbits) + 7) / 8;
        wp::EncodePackParams params{checked_u32(n, "encode"), std::uint32_t(nbits), checked_u32(bytes, "encode")};
        id<MTLBuffer> v = shared(values, n * 2);
        id<MTLBuffer> c = shared(codes, 65536);
        id<MTLBuffer> out = scratch(bytes);
        run_1d("encode_pack", bytes, [&](id<MTLComputeCommandEncoder> enc) {
            [enc setBuffer:v offset:0 atIndex:0];
            [enc setBuffer:c offset:0 atIndex:1];
            [enc setBuffer:out offset:0 atIndex:2];
            [enc setBytes:&params length:sizeof params atIndex:3];
        });
        std::memcpy(packed, out.contents, bytes);
    }
}

void metal_pack_bits(const std::uint8_t* values, std::size_t n, int nbits, std::uint8_t* packed) {
    @autoreleasepool {
        const std::size_t bytes = (n * std::size_t(nbits) + 7) / 8;
        wp::EncodePackParams params{checked_u32(n, "pack"), std::uint32_t(nbits), checked_u32(bytes, "pack")};
        id<MTLBuffer> v = shared(values, n);
        id<MTLBuffer> out = scratch(bytes);
        run_1d("pack_bits", bytes, [&](id<MTLComputeCommandEncoder> enc) {
            [enc setBuffer:v offset:0 atIndex:0];
            [enc setBuffer:out offset:0 atIndex:1];
            [enc setBytes:&params length:sizeof params atIndex:2];
        });
        std::memcpy(packed, out.contents, bytes);
    }
}

std::size_t metal_sparsify(const void* values, bool is_half, std::size_t n, float cut, std::uint8_t* mask,
                           void* kept) {
    @autoreleasepool {
        const std::size_t mask_bytes = (n + 7) / 8;
        std::uint32_t cut_bits;
        std::memcpy(&cut_bits, &cut, 4);
        wp::SparseParams params{checked_u32(n, "prune"), checked_u32(mask_bytes, "prune"), is_half, cut_bits};
        id<MTLBuffer> w = shared(values, n * (is_half ? 2 : 4));
        id<MTLBuffer> m = scratch(mask_bytes);
        id<MTLBuffer> counts = scratch(mask_bytes * 4);
        run_1d("sparse_mask", mask_bytes, [&](id<MTLComputeCommandEncoder> enc) {
            [enc setBuffer:w offset:0 atIndex:0];  // h16 (read when is_half)
            [enc setBuffer:w offset:0 atIndex:1];  // f32 (read otherwise)
            [enc setBuffer:m offset:0 atIndex:2];
            [enc setBuffer:counts offset:0 atIndex:3];
            [enc setBytes:&params length:sizeof params atIndex:4];
        });
        // exclusive scan of the per-byte counts on the host
        std::vector<std::uint32_t> offsets(mask_bytes);
        const std::uint32_t* c = static_cast<const std::uint32_t*>(counts.contents);
        std::size_t total = 0;
        for (std::size_t j = 0; j < mask_bytes; ++j) {
            offsets[j] = static_cast<std::uint32_t>(total);
            total += c[j];
        }
        id<MTLBuffer> off = shared(offsets.data(), mask_bytes * 4);
        id<MTLBuffer> out = scratch(total * (is_half ? 2 : 4));
        run_1d("sparse_gather", mask_bytes, [&](id<MTLComputeCommandEncoder> enc) {
            [enc setBuffer:w offset:0 atIndex:0];
            [enc setBuffer:w offset:0 atIndex:1];
            [enc setBuffer:m offset:0 atIndex:2];
            [enc setBuffer:off offset:0 atIndex:3];
            [enc setBuffer:out offset:0 atIndex:4];  // out16 (written when is_half)
            [enc setBuffer:out offset:0 atIndex:5];  // out32 (written otherwise)
            [enc setBytes:&params length:sizeof params atIndex:6];
        });
        std::memcpy(mask, m.contents, mask_bytes);
        std::memcpy(kept, out.contents, total * (is_half ? 2 : 4));
        return total;
    }
}

}  // namespace weightpress
