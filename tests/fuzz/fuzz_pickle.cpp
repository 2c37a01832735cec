// io::unpickle on raw bytes (a torch.save archive's data.pkl), then pickle_object on the tree: what
// it writes must unpickle again and re-pickle to the same bytes.
#include "fuzz_common.h"
#include "instinct/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::guarded([&] {
    auto root = instinct::io::unpickle(data, size, "fuzz.pkl");
    if (!root) std::abort();
    (void)root->type_name();
    std::string bytes;
    try {
      bytes = instinct::io::pickle_object(root);
    } catch (const instinct::Error&) {
      return;  // a tree with classes torch.save does not write (Global/Object/Storage nodes)
    }
    auto again = instinct::io::unpickle(bytes.data(), bytes.size(), "fuzz.pkl (re-pickled)");
    if (instinct::io::pickle_object(again) != bytes) {
      std::fprintf(stderr, "FUZZ FINDING: pickle_object(unpickle(pickle_object(x))) differs\n");
      std::abort();
    }
  });
  return 0;
}
