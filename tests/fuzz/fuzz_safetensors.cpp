// io::load_safetensors on a file holding the input bytes.
#include "fuzz_common.h"
#include "instinct/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_file("input.safetensors", data, size);
  fuzz::guarded([&] {
    std::map<std::string, std::string> meta;
    auto tensors = instinct::io::load_safetensors(path, &meta);
    for (const auto& [name, t] : tensors)
      if (name.empty() || !t.defined()) std::abort();
  });
  return 0;
}
