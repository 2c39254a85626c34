// Test extension: injected script that marks the page once it has loaded (checked by a browser test).
onUiLoaded(function () {
    document.body.dataset.pageMarker = "extension script ran";
});
