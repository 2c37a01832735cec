// teacher::read_bundle_info on a bundle directory whose bundle.json holds the input, then what
// TeacherBundle::load and the tools take from it before opening module files.
#include "fuzz_common.h"
#include "instinct/teacher/bundle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::write_file("bundle.json", data, size);
  fuzz::guarded([&] {
    const auto info = instinct::teacher::read_bundle_info(fuzz::scratch_dir());
    for (const auto& key : instinct::teacher::bundle_module_keys())
      if (info.modules.count(key)) (void)info.module_path(key);
    for (const auto& c : info.concepts)
      if (info.concept_id(c) < 0) std::abort();
    instinct::data::validate(instinct::teacher::preprocess_config(info));
  });
  return 0;
}
