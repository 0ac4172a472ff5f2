// The Metal host (Apple platforms only; Objective-C++ with ARC). Compiles the amalgamated
// kernel source (metal/amalgamate.py, embedded as kWeightpressMetalSource) at first use
// with fast math off, keeps one pipeline per kernel, and runs the kernels on shared
// (unified-memory) buffers. NOT YET RUN ON A MAC: see metal/README.md.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <mutex>
#include <stdexcept>
#include <string>

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

}  // namespace weightpress
